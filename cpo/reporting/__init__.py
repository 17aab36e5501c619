"""Reporting: the experiment report, its plots, the post-build summary and MLflow tracking."""

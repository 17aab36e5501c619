"""Experiments: design settings, statistics and decisions (a domain package on top of the
engine)."""

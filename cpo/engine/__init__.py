"""The engine: a dbt-style runner that knows nothing of customers, messages or experiments.

Config and settings, loading, compiling, the graph, execution, artifacts, the call layer, the
Project API and the CLI. Domain packages (`cpo.personalization`, `cpo.experiments`,
`cpo.reporting`) and providers plug into it; it never imports them (import-linter checks this).
"""

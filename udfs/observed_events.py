"""Observed outcome events, read from CSV or Parquet files as text (typed in ``stg_events``).

``vars.experiment.events.path`` is a path or glob relative to the project (or a list of them),
default ``seeds/events*.csv``. A glob that matches nothing gives an empty table with the same
columns, so ``stg_events`` compiles and builds before any event has arrived (DuckDB's
``read_csv`` raises on a glob without matches, hence this step rather than a SQL model).

Columns (all VARCHAR): customer_id, experiment_id, event, event_at, revenue, source_file.
A file without an ``experiment_id`` column gets ``vars.experiment.id``; without ``revenue``, NULL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from cpo.engine.compile import sql_literal

DEFAULT_PATH = "seeds/events*.csv"
REQUIRED = ("customer_id", "event", "event_at")
COLUMNS = ("customer_id", "experiment_id", "event", "event_at", "revenue", "source_file")
SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])


def _matches(root: Path, patterns: list[str]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        path = Path(pattern)
        if path.is_absolute():
            found.update(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
        else:
            found.update(root.glob(pattern))
    return sorted(p for p in found if p.is_file())


def _sql_list(paths: list[Path]) -> str:
    return sql_literal([str(p) for p in paths])


def _reader(paths: list[Path]) -> str:
    """One SELECT per file kind, every column as text, with the file name."""
    csv = [p for p in paths if p.suffix.lower() != ".parquet"]
    parquet = [p for p in paths if p.suffix.lower() == ".parquet"]
    parts = []
    if csv:
        parts.append(
            f"select * from read_csv({_sql_list(csv)}, all_varchar = true, "
            "union_by_name = true, filename = true, header = true)"
        )
    if parquet:
        parts.append(
            f"select * from read_parquet({_sql_list(parquet)}, union_by_name = true, "
            "filename = true)"
        )
    return "\nunion all by name\n".join(parts)


def model(ctx: Any) -> pa.Table:
    """Read every matching events file into one text table."""
    from _experiment_design import experiment_config, experiment_settings

    from cpo.errors import ConfigurationError

    # The root of the experiment chain checks that the control arm is among the arms (which
    # may be the tones), so a bad control fails here with its key path, not as a SQL error.
    ctx.var("experiment", expect=dict)  # required: this chain analyses a declared experiment
    tones = ctx.var("generation.tones", [], expect=list)
    experiment_config(
        experiment_settings(ctx), ["control", *tones], error=ctx.config.document.error
    )
    setting = ctx.var("experiment.events.path", DEFAULT_PATH, expect=(str, list))
    patterns = [setting] if isinstance(setting, str) else [str(p) for p in setting]
    paths = _matches(ctx.project_dir, patterns)
    ctx.log.info("observed event files", extra={"files": len(paths)})
    if not paths:
        return SCHEMA.empty_table()
    raw = ctx.sql(_reader(paths))
    columns = set(raw.columns)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ConfigurationError(
            f"events files {[p.name for p in paths]} lack the columns {missing}; each file needs "
            "customer_id, event and event_at (experiment_id and revenue are optional)",
            path="cpo.yml",
            key="vars.experiment.events.path",
        )
    experiment = sql_literal(str(ctx.var("experiment.id", "experiment")))
    experiment_sql = "cast(experiment_id as varchar)" if "experiment_id" in columns else experiment
    revenue_sql = "cast(revenue as varchar)" if "revenue" in columns else "null"
    query = f"""
        select
            cast(customer_id as varchar) as customer_id,
            {experiment_sql} as experiment_id,
            cast(event as varchar) as event,
            cast(event_at as varchar) as event_at,
            {revenue_sql} as revenue,
            parse_filename(filename) as source_file
        from ({_reader(paths)})
    """
    return ctx.sql(query).to_arrow_table().cast(SCHEMA)

"""What the report shows, read once from the database (through the adapter) and artifacts.

    data = read_report_data(config)

The database is the active target's (DuckDB or Spark), opened read-only with
`cpo.adapters.open_adapter` and read only through the adapter protocol (``relations``,
``fetch``). ``vars.experiment`` is read through its one model,
`cpo.experiments.settings.ExperimentVars`. Missing tables become notices, never errors. No
customer-level data is read: only aggregates and the variant templates (merge tags unrendered).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from cpo.adapters import database_exists, database_modified, open_adapter, target_type
from cpo.adapters.base import Adapter
from cpo.engine.config import ProjectConfig
from cpo.errors import CPOError
from cpo.experiments.settings import ExperimentVars
from cpo.reporting import tables as t


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, read once from the database and artifacts."""

    project: str
    experiment_id: str | None
    control: str
    alpha: float
    min_power: float
    generated_at: str
    run: Mapping[str, Any]
    has_database: bool
    notices: tuple[str, ...] = ()
    results: pd.DataFrame | None = None
    segments: Mapping[str, str] = field(default_factory=dict)
    assigned: pd.DataFrame | None = None
    funnel: pd.DataFrame | None = None
    events: int = 0
    freshness: Mapping[str, Any] = field(default_factory=dict)
    screenings: pd.DataFrame | None = None
    blocked: pd.DataFrame | None = None
    variants: pd.DataFrame | None = None
    calls: pd.DataFrame | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    metric_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    policy: pd.DataFrame | None = None

    @property
    def simulated(self) -> bool:
        """Whether the results rest on simulated outcomes (they then decide nothing)."""
        return self.results is not None and "simulated" in set(self.results["decision"])


def experiment_settings(config: ProjectConfig) -> ExperimentVars | None:
    """``vars.experiment`` as the model that checked it when ``cpo.yml`` loaded, or None when
    the project declares no experiment."""
    if config.vars.get("experiment") is None:
        return None
    return config.section("vars.experiment", ExperimentVars)


def read_report_data(config: ProjectConfig) -> ReportData:
    """Read what the report needs; missing tables become notices, never errors."""
    declared = experiment_settings(config)
    experiment = declared or ExperimentVars()
    base: dict[str, Any] = {
        "project": config.name,
        "experiment_id": declared.id if declared else None,
        "control": experiment.control,
        "alpha": float(experiment.alpha),
        "min_power": float(experiment.min_power),
        "generated_at": _now(),
        "run": _run_results(config.path("target")),
        "weights": {a.name: float(a.weight) for a in experiment.arms or []},
        "metric_settings": {
            m.name: {
                "mde": m.mde if m.mde is not None else experiment.mde,
                "direction": m.direction,
            }
            for m in experiment.metrics or []
        },
    }
    try:
        exists = database_exists(config)
    except CPOError as e:
        return ReportData(**base, has_database=False, notices=(f"Cannot open the database: {e}",))
    if not exists:
        where = (
            f"{config.database_path.name} does not exist"
            if target_type(config) == "duckdb"
            else f"target {config.target.name} has no published build"
        )
        return ReportData(
            **base,
            has_database=False,
            notices=(
                f"No database yet: {where}. Run `python runner.py build` "
                "first, then `python runner.py report`.",
            ),
        )
    try:
        db = open_adapter(config, read_only=True)
    except CPOError as e:
        return ReportData(**base, has_database=False, notices=(f"Cannot open the database: {e}",))
    try:
        return _read(db, base, _modified(config))
    finally:
        db.close()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _modified(config: ProjectConfig) -> str | None:
    """When the published database was last written, or None when unknown."""
    mtime = database_modified(config)
    return (
        None if mtime is None else datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    )


def frame(db: Adapter, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
    """A query's rows as a DataFrame (through `Adapter.fetch`; decimals become floats)."""
    columns, rows = db.fetch(sql, params)
    result = (
        pd.DataFrame.from_records(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
    )
    for column in result.columns:
        values = result[column].dropna()
        if not values.empty and all(isinstance(v, Decimal) for v in values):
            result[column] = result[column].astype(float)
    return result


def _read(db: Adapter, base: dict[str, Any], modified: str | None) -> ReportData:
    have = db.relations()
    notices: list[str] = []
    experiment_id = base["experiment_id"]

    results = None
    if t.EXPERIMENT_RESULTS in have:
        results = frame(db, t.RESULTS_SQL)
        ids = list(dict.fromkeys(results["experiment_id"].dropna()))
        if experiment_id not in ids and ids:
            experiment_id = ids[0]
        results = results[results["experiment_id"] == experiment_id].reset_index(drop=True)
    arms = base["weights"]
    if (results is None or results.empty) and len(arms) == 1:
        results = None
        notices.append(
            f"One arm only ({next(iter(arms))}): there is nothing to compare, so the analysis "
            "was skipped. Add a control or a holdout arm to measure an effect."
        )
    elif results is None or results.empty:
        results = None
        notices.append(
            "No experiment results yet: build the experiment models "
            "(`python runner.py build`) once assignments and events exist."
        )
    policy = None
    if t.SEGMENT_POLICY in have:
        policy = frame(db, t.POLICY_SQL, [experiment_id])
        policy = None if policy.empty else policy
    segments = {}
    if t.SEGMENT_PROFILES in have:
        segments = dict(db.fetch(t.SEGMENTS_SQL)[1])
    assigned = funnel = None
    if t.ASSIGNMENTS in have:
        assigned = frame(db, t.ASSIGNED_SQL, [experiment_id])
    events = 0
    freshness: dict[str, Any] = {"database_modified": modified}
    if t.OUTCOME_EVENTS in have and assigned is not None:
        stats = db.fetch(t.EVENT_STATS_SQL)[1][0]
        events = int(stats[0])
        freshness.update(
            events=events, first_event_at=stats[1], last_event_at=stats[2], event_sources=stats[3]
        )
        if events:
            funnel = frame(db, t.FUNNEL_SQL, [experiment_id])
    if assigned is not None and not assigned.empty:
        freshness["last_assigned_at"] = assigned["last_assigned_at"].max()
    if not events:
        notices.append(
            "No outcome events yet: the funnel is empty and every decision stays "
            "inconclusive until delivered, open, click and conversion events arrive."
        )
    screenings = blocked = variants = calls = None
    if t.SCREENINGS in have:
        screenings = frame(db, t.SCREENINGS_SQL)
        blocked = frame(db, t.blocked_sql(t.VARIANTS in have))
    if {t.APPROVED_VARIANTS, t.VARIANTS} <= have.keys():
        variants = _variants(db, t.CONTENT in have)
    if t.PROVIDER_CALLS in have:
        calls = frame(db, t.CALLS_SQL)
    return ReportData(
        **{**base, "experiment_id": experiment_id},
        has_database=True,
        notices=tuple(notices),
        results=results,
        segments=segments,
        assigned=assigned,
        funnel=funnel,
        events=events,
        freshness=freshness,
        screenings=screenings,
        blocked=blocked,
        variants=variants,
        calls=calls,
        policy=policy,
    )


def _variants(db: Adapter, titled: bool) -> pd.DataFrame:
    """Approved variants; ``sources`` lists each cited document as ``title (id)``."""
    variants = frame(db, t.VARIANTS_SQL)
    titles = dict(db.fetch(t.TITLES_SQL)[1]) if titled else {}

    def sources(citations: Any) -> list[str]:
        cited = [] if citations is None else [d for d in citations if d is not None]
        return [f"{d if titles.get(d) is None else titles[d]} ({d})" for d in cited]

    variants["sources"] = variants["citations"].map(sources)
    return variants.drop(columns="citations")


def records(table: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Rows as dicts, with None (not NaN) for missing values."""
    if table is None:
        return []
    return table.astype(object).where(table.notna(), None).to_dict("records")


def _run_results(target: Path) -> dict[str, Any]:
    try:
        payload = json.loads((target / "run_results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    meta = payload.get("metadata") or {}
    results = payload.get("results") or []
    return {
        "invocation_id": meta.get("invocation_id"),
        "generated_at": meta.get("generated_at"),
        "command": payload.get("command"),
        "elapsed_time": payload.get("elapsed_time"),
        "nodes": len(results),
        "failed": sum(1 for r in results if r.get("status") in ("error", "fail")),
    }

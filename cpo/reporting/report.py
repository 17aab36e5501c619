"""The experiment report: one self-contained HTML file, from the database and artifacts only.

    path = write_report(project.config)            # target/report.html

Everything comes from the built database (read-only) and ``target/run_results.json``: the
decision and why, a forest plot of each arm's lift per metric, a per-segment heatmap, the funnel
per arm, the SRM check, power achieved versus needed, safety outcomes, the approved variants with
their cited documents, provider calls and costs, and data freshness. Plots are matplotlib SVGs
embedded as data URIs, so the file opens offline with no script and no network fetch. All text
goes through Jinja's autoescaping. No customer-level data is read: no names, emails or rendered
messages, only aggregates and the variant templates (merge tags unrendered).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from cpo.adapters.duckdb import Database
from cpo.engine.config import ProjectConfig
from cpo.errors import CPOError
from cpo.reporting.plots import (
    ARM_PALETTE,
    CONTROL_COLOR,
    DECISION_COLORS,
    EVENTS,
    FUNNEL_LABELS,
    PLOT_IDS,
    PLOTS,
    finite,
    forest_plot,
    funnel_plot,
    heatmap_plot,
    overall_results,
    power_plot,
    primary_metric,
    safety_plot,
    srm_p,
    srm_plot,
)

# The figures moved to cpo.reporting.plots; their names stay importable from here.
__all__ = [
    "ARM_PALETTE",
    "CONTROL_COLOR",
    "CSS",
    "DECISION_COLORS",
    "EVENTS",
    "FUNNEL_LABELS",
    "PLOT_IDS",
    "TEMPLATE",
    "ReportData",
    "Verdict",
    "forest_plot",
    "funnel_plot",
    "heatmap_plot",
    "power_plot",
    "read_report_data",
    "render_report",
    "safety_plot",
    "srm_plot",
    "verdict",
    "write_report",
]


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


def write_report(config: ProjectConfig, out: Path | None = None) -> Path:
    """Write the HTML report (default ``target/report.html``) and return its path.

    Works before any build and with no events: the report then says what is missing.

    Raises:
        CPOError: the output file cannot be written.
    """
    path = Path(out) if out else config.path("target") / "report.html"
    html = render_report(read_report_data(config))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise CPOError(
            f"cannot write the report to {path}: {e.strerror or e}; choose another --out"
        ) from e
    return path


# -- reading ---------------------------------------------------------------------------------


def read_report_data(config: ProjectConfig) -> ReportData:
    """Read what the report needs; missing tables become notices, never errors."""
    experiment = config.vars.get("experiment") or {}
    experiment = experiment if isinstance(experiment, Mapping) else {}
    base = {
        "project": config.name,
        "experiment_id": experiment.get("id"),
        "control": str(experiment.get("control", "control")),
        "alpha": float(experiment.get("alpha", 0.05)),
        "min_power": float(experiment.get("min_power", 0.8)),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run": _run_results(config.path("target")),
        "weights": _weights(experiment),
        "metric_settings": _metric_settings(experiment),
    }
    database = config.database_path
    if not database.exists():
        return ReportData(
            **base,
            has_database=False,
            notices=(
                f"No database yet: {database.name} does not exist. Run `python runner.py build` "
                "first, then `python runner.py report`.",
            ),
        )
    try:
        db = Database(database, read_only=True)
    except CPOError as e:
        return ReportData(**base, has_database=False, notices=(f"Cannot open the database: {e}",))
    try:
        return _read(db, base, database)
    finally:
        db.close()


def _read(db: Database, base: dict[str, Any], database: Path) -> ReportData:
    have = db.relations()
    notices: list[str] = []
    experiment_id = base["experiment_id"]

    def frame(sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        return db.relation(sql, params).df()

    results = None
    if "experiment_results" in have:
        results = frame("select * from experiment_results")
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
    if "segment_policy" in have:
        policy = frame(
            "select * from segment_policy where experiment_id = ? order by segment_id",
            [experiment_id],
        )
        policy = None if policy.empty else policy
    segments = {}
    if "segment_profiles" in have:
        segments = dict(db.fetch("select segment_id, segment_name from segment_profiles")[1])
    assigned = funnel = None
    if "assignments" in have:
        assigned = frame(
            "select arm, count(*) as customers, max(assigned_at) as last_assigned_at "
            "from assignments where cast(experiment_id as varchar) = coalesce(?, "
            "cast(experiment_id as varchar)) group by arm order by arm",
            [experiment_id],
        )
    events = 0
    freshness: dict[str, Any] = {
        "database_modified": datetime.fromtimestamp(database.stat().st_mtime, UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        )
    }
    if "stg_events" in have and assigned is not None:
        stats = db.fetch(
            "select count(*), min(event_at), max(event_at), "
            "string_agg(distinct source, ', ') from stg_events"
        )[1][0]
        events = int(stats[0])
        freshness.update(
            events=events, first_event_at=stats[1], last_event_at=stats[2], event_sources=stats[3]
        )
        if events:
            funnel = frame(_FUNNEL_SQL, [experiment_id])
    if assigned is not None and not assigned.empty:
        freshness["last_assigned_at"] = assigned["last_assigned_at"].max()
    if not events:
        notices.append(
            "No outcome events yet: the funnel is empty and every decision stays "
            "inconclusive until delivered, open, click and conversion events arrive."
        )
    screenings = blocked = variants = calls = None
    if "safety_screenings" in have:
        screenings = frame(
            'select "check", count(*) filter (where passed) as passed, '
            "count(*) filter (where not passed) as blocked from safety_screenings "
            'group by "check" order by "check"'
        )
        blocked = frame(
            _BLOCKED_SQL.format(
                variants_join="left join variants v using (variant_id)"
                if "variants" in have
                else "left join (select null::varchar as variant_id, null::varchar as segment_id, "
                "null::varchar as tone) v using (variant_id)"
            )
        )
    if {"approved_variants", "variants"} <= have.keys():
        titles = "stg_content" in have
        variants = frame(_VARIANTS_SQL if titles else _VARIANTS_SQL_NO_TITLES)
        variants["sources"] = variants["sources"].map(lambda s: [] if s is None else list(s))
    if "llm_calls" in have:
        calls = frame(_CALLS_SQL)
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


# Customers reaching each stage per arm (a customer counts once per stage).
_FUNNEL_SQL = """
with assigned as (
    select cast(experiment_id as varchar) as experiment_id, cast(customer_id as varchar)
        as customer_id, arm
    from assignments
    where cast(experiment_id as varchar) = coalesce(?, cast(experiment_id as varchar))
),
reached as (
    select distinct experiment_id, customer_id, event from stg_events
)
select a.arm, count(distinct a.customer_id) as assigned,
    count(distinct r.customer_id) filter (where r.event = 'delivered') as delivered,
    count(distinct r.customer_id) filter (where r.event = 'open') as "open",
    count(distinct r.customer_id) filter (where r.event = 'click') as click,
    count(distinct r.customer_id) filter (where r.event = 'conversion') as conversion
from assigned a
left join reached r on r.experiment_id = a.experiment_id and r.customer_id = a.customer_id
group by a.arm
order by a.arm
"""

_BLOCKED_SQL = """
select s.variant_id, v.segment_id, v.tone, s."check", s.severity, s.reason
from safety_screenings s
{variants_join}
where not s.passed
order by s.variant_id, s."check"
"""

_VARIANTS_SQL = """
select v.variant_id, v.segment_id, v.tone, v.subject, v.body, v.provider, v.model,
    coalesce((
        select list(coalesce(d.title, c.document_id) || ' (' || c.document_id || ')'
                    order by c.pos)
        from (select unnest(v.citations) as document_id,
                     generate_subscripts(v.citations, 1) as pos) c
        left join stg_content d on d.document_id = c.document_id
    ), []) as sources
from variants v
join approved_variants a using (variant_id)
order by v.segment_id nulls first, v.tone
"""

_VARIANTS_SQL_NO_TITLES = _VARIANTS_SQL.replace(
    "left join stg_content d on d.document_id = c.document_id",
    "left join (select null::varchar as document_id, null::varchar as title) d "
    "on d.document_id = c.document_id",
)

_CALLS_SQL = """
select run_id, step, provider, model, count(*) as calls,
    count(*) filter (where cache_hit) as cache_hits,
    coalesce(sum(input_tokens), 0) as input_tokens,
    coalesce(sum(output_tokens), 0) as output_tokens,
    coalesce(sum(cost_usd), 0) as cost_usd,
    avg(latency_ms) filter (where not cache_hit) as avg_latency_ms,
    count(*) filter (where status <> 'success') as failed,
    max(called_at) as last_called_at
from llm_calls
group by all
order by max(called_at), step, provider, model
"""


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


def _weights(experiment: Mapping[str, Any]) -> dict[str, float]:
    arms = experiment.get("arms") or []
    weights = {}
    for arm in arms if isinstance(arms, list) else []:
        if isinstance(arm, Mapping) and arm.get("name"):
            weights[str(arm["name"])] = float(arm.get("weight", 1) or 0)
    return weights


def _metric_settings(experiment: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    metrics = experiment.get("metrics") or []
    default_mde = experiment.get("mde", 0.1)
    out = {}
    for m in metrics if isinstance(metrics, list) else []:
        if isinstance(m, Mapping) and m.get("name"):
            out[str(m["name"])] = {
                "mde": m.get("mde", default_mde),
                "direction": m.get("direction", "increase"),
            }
    return out


# -- summaries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The headline: what to do and why."""

    decision: str
    title: str
    reasons: tuple[str, ...]


def verdict(data: ReportData) -> Verdict:
    """Summarise the primary metric's per-arm decisions into one recommendation."""
    if data.results is None:
        return Verdict("inconclusive", "No decision yet", ("There are no experiment results.",))
    overall = overall_results(data)
    metric = primary_metric(data.results)
    primary = overall[overall["metric"] == metric]
    reasons = tuple(
        f"{r.arm}: {str(r.decision).replace('_', ' ')}: {r.decision_reason}"
        for r in primary.itertuples()
    )
    decisions = set(primary["decision"])
    if "simulated" in decisions:
        return Verdict(
            "simulated",
            "No decision: the outcomes are simulated",
            ("These outcomes come from vars.experiment.simulation, not from customers; they "
             "show how the analysis works and decide nothing.", *reasons),
        )  # fmt: skip
    if "invalid" in decisions:
        return Verdict("invalid", "Invalid experiment: do not trust these results", reasons)
    ships = primary[primary["decision"] == "ship"]
    if not ships.empty:
        direction = data.metric_settings.get(metric, {}).get("direction", "increase")
        best = ships.sort_values("estimate", ascending=direction != "increase").iloc[0]
        return Verdict("ship", f"Ship {best['arm']}", reasons)
    if decisions == {"no_ship"}:
        return Verdict("no_ship", "Do not ship: no arm beats control", reasons)
    return Verdict("inconclusive", "Inconclusive: keep the control for now", reasons)


def _power_rows(data: ReportData) -> list[dict[str, Any]]:
    """Units per arm achieved versus needed for each proportion metric's MDE."""
    from cpo.experiments import stats

    overall = overall_results(data)
    if overall.empty:
        return []
    if "metric_role" in overall:
        roles = overall["metric_role"]
    else:
        roles = pd.Series(["primary"] * len(overall), index=overall.index)
    arms = max(len(set(overall["arm"])), 1)
    family = {role: arms * len(set(overall.loc[roles == role, "metric"])) for role in set(roles)}
    rows = []
    for r in overall.itertuples():
        role = getattr(r, "metric_role", "primary")
        # Each family's Bonferroni bound; guardrails are tested at alpha.
        comparisons = 1 if role == "guardrail" else max(family.get(role, 1), 1)
        mde = data.metric_settings.get(str(r.metric), {}).get("mde", 0.1)
        needed = None
        p = getattr(r, "control_mean", None)
        if getattr(r, "metric_type", "proportion") == "proportion" and finite(p) and 0 < p < 1:
            try:
                needed = stats.sample_size_per_arm(
                    p, float(mde) * p, data.alpha / comparisons, data.min_power
                )
            except CPOError:
                needed = None
        rows.append(
            {
                "arm": r.arm,
                "metric": r.metric,
                "mde": mde,
                "n": min(r.n_control, r.n_treatment),
                "needed": needed,
                # Results without a power column (older or custom models) show "—".
                "power": getattr(r, "power", None),
            }
        )
    return rows


def _call_summary(calls: pd.DataFrame | None, run_id: str | None) -> dict[str, Any] | None:
    if calls is None or calls.empty:
        return None
    latest = run_id if run_id in set(calls["run_id"]) else calls["run_id"].iloc[-1]
    this_run = calls[calls["run_id"] == latest]

    def totals(frame: pd.DataFrame) -> dict[str, Any]:
        return {
            k: frame[k].sum()
            for k in ("calls", "cache_hits", "input_tokens", "output_tokens", "cost_usd", "failed")
        }

    return {
        "run_id": latest,
        "run": totals(this_run),
        "all": totals(calls),
        "builds": calls["run_id"].nunique(),
        "rows": this_run.to_dict("records"),
    }


# -- rendering -------------------------------------------------------------------------------


def render_report(data: ReportData) -> str:
    """The report as one HTML document (plots embedded, all text escaped)."""
    plots = {}
    if data.has_database:
        plots = {plot_id: plot(data) for plot_id, plot in PLOTS.items()}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(num=_num, pct=_pct, pval=_pval, label=lambda s: str(s).replace("_", " "))
    return env.from_string(TEMPLATE).render(
        d=data,
        verdict=verdict(data) if data.has_database else None,
        plots=plots,
        overall=_records(overall_results(data)),
        power_rows=_power_rows(data) if data.has_database else [],
        srm_p=srm_p(data),
        calls=_call_summary(data.calls, data.run.get("invocation_id")),
        blocked=_records(data.blocked),
        variant_groups=_variant_groups(data),
        decision_colors=DECISION_COLORS,
        css=CSS,
        cpo_version=_version(),
    )


def _records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Rows as dicts, with None (not NaN) for missing values."""
    if frame is None:
        return []
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _variant_groups(data: ReportData) -> list[tuple[str, list[dict[str, Any]]]]:
    """Approved variants grouped per segment (the control first), tones side by side."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for v in _records(data.variants):
        segment = v["segment_id"]
        title = data.segments.get(segment, segment) if segment else "Control (every segment)"
        groups.setdefault(str(title), []).append(v)
    return list(groups.items())


def _version() -> str:
    from cpo import __version__

    return __version__


def _num(value: Any, digits: int = 0) -> str:
    if not finite(value):
        return "—"
    return f"{float(value):,.{digits}f}"


def _pct(value: Any, digits: int = 1, signed: bool = False) -> str:
    if not finite(value):
        return "—"
    return f"{float(value) * 100:{'+' if signed else ''}.{digits}f}%"


def _pval(value: Any) -> str:
    if not finite(value):
        return "—"
    return "< 0.0001" if float(value) < 1e-4 else f"{float(value):.4f}"


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; --card:#fff; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;
  color:var(--fg); background:var(--bg); }
header { background:#24292f; color:#fff; padding:20px 32px; }
header h1 { margin:0; font-size:22px; font-weight:600; }
header .meta { color:#d1d9e0; font-size:13px; margin-top:4px; }
main { max-width:1180px; margin:0 auto; padding:20px 32px 48px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:18px 22px; margin:18px 0; }
h2 { font-size:17px; margin:0 0 10px; }
h3 { font-size:14px; margin:14px 0 6px; }
p.note, .muted { color:var(--muted); }
.notice { background:#fff8c5; border:1px solid #d4a72c; border-radius:6px; padding:10px 14px;
  margin:10px 0; }
.verdict { border-left:6px solid; padding:6px 0 6px 16px; }
.verdict h2 { font-size:20px; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; color:#fff;
  font-size:12px; font-weight:600; white-space:nowrap; }
.kpis { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:10px; }
.kpi { border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.kpi .v { font-size:20px; font-weight:600; }
.kpi .k { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; font-size:13px; margin:6px 0; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { background:var(--bg); font-weight:600; }
td .muted { font-size:12px; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
figure { margin:8px 0; }
figure img { max-width:100%; height:auto; display:block; }
figcaption { color:var(--muted); font-size:12px; }
.grid { display:grid; grid-template-columns:repeat(3,minmax(0,1fr)); gap:12px; }
@media (max-width:900px) { .grid { grid-template-columns:1fr; } }
.variant { border:1px solid var(--line); border-radius:6px; padding:12px; }
.variant .subject { font-weight:600; margin:6px 0; }
.variant .body { white-space:pre-wrap; font-size:12.5px; background:var(--bg); padding:8px;
  border-radius:4px; max-height:190px; overflow:auto; }
.variant ul { margin:6px 0 0 18px; padding:0; font-size:12px; }
.cols { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
@media (max-width:900px) { .cols { grid-template-columns:1fr; } }
footer { color:var(--muted); font-size:12px; text-align:center; padding:16px; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Experiment report · {{ d.project }}{% if d.experiment_id %} · {{ d.experiment_id }}
{% endif %}</title>
<style>{{ css | safe }}</style>
</head>
<body>
<header>
  <h1>Experiment report{% if d.experiment_id %}: {{ d.experiment_id }}{% endif %}</h1>
  <div class="meta">{{ d.project }} · generated {{ d.generated_at }}
    {%- if d.run.get('invocation_id') %} · run <code>{{ d.run.invocation_id }}</code>{% endif %}
</div>
</header>
<main>
{% for notice in d.notices %}<div class="notice" role="status">{{ notice }}</div>{% endfor %}
{% if not d.has_database %}
<section id="no-database"><h2>Nothing to report yet</h2>
<p>The report is built from the project's database, which does not exist yet.</p></section>
{% else %}
{% if d.simulated %}<div id="simulated-banner" class="notice" role="alert"><b>Simulated
outcomes.</b> Every result below comes from simulated events (vars.experiment.simulation), not
from customers: no arm is shipped or rejected on them.</div>{% endif %}
<section id="decision" class="verdict"
style="border-color: {{ decision_colors.get(verdict.decision, '#57606a') }}">
  <h2>Decision: {{ verdict.title }}</h2>
  <ul>{% for reason in verdict.reasons %}<li>{{ reason }}</li>{% endfor %}</ul>
  <p class="note">Primary metric decisions per arm against <b>{{ d.control }}
</b>, at α = {{ d.alpha }}, p-values of the difference of means adjusted across arms × primary
  metrics: ship when significantly better and no guardrail (one-sided for harm) is harmed; a
  non-significant result is no ship when the test had power for the MDE, else inconclusive.
  Secondary metrics inform and never decide.</p>
</section>

{% if overall %}
<section id="results">
  <h2>Results per metric and arm</h2>
  <figure><img id="plot-forest" alt="Forest plot of each arm's lift per metric"
src="{{ plots['plot-forest'] }}">
  <figcaption>Point estimate and confidence interval of each arm's lift against {{ d.control }};
  colour = decision.</figcaption></figure>
  <table>
    <thead><tr><th>metric</th><th>arm</th><th class="n">control</th><th class="n">treatment</th>
    <th class="n">lift</th><th class="n">interval</th><th class="n">p</th><th class="n">p adj.</th>
    <th class="n">P(better)</th><th class="n">power</th><th>decision</th></tr></thead>
    <tbody>
    {% for r in overall %}
    <tr><td>{{ r.metric }}{% if r.metric_role %} <span class="muted">({{ r.metric_role }})</span>
{% endif %}</td>
      <td>{{ r.arm }}</td>
      <td class="n">{{ r.control_mean | num(4) }}</td><td class="n">{{ r.treatment_mean | num(4) }}
</td>
      {% if r.get('effect_scale', 'relative') == 'absolute' %}
      <td class="n">{{ r.estimate | num(4) }}</td>
<td class="n">[{{ r.ci_low | num(4) }}, {{ r.ci_high | num(4) }}]</td>
      {% else %}
      <td class="n">{{ r.estimate | pct(1, True) }}</td>
<td class="n">[{{ r.ci_low | pct(1, True) }}, {{ r.ci_high | pct(1, True) }}]</td>
      {% endif %}
      <td class="n">{{ r.p_value | pval }}</td><td class="n">{{ r.p_value_adjusted | pval }}</td>
      <td class="n">{{ r.chance_to_win | pct(1) }}</td>
<td class="n">{{ r.get('power') | pct(0) }}</td>
      <td><span class="badge" style="background: {{ decision_colors.get(r.decision, '#57606a') }}">
{{ r.decision | label }}</span>
        <div class="muted">{{ r.decision_reason }}</div></td></tr>
    {% endfor %}
    </tbody>
  </table>
</section>
{% endif %}

{% if plots['plot-heatmap'] %}
<section id="segments">
  <h2>Lift by segment</h2>
  <figure><img id="plot-heatmap" alt="Heatmap of the primary metric's lift per segment and arm"
src="{{ plots['plot-heatmap'] }}">
  <figcaption>* adjusted p &lt; α (segment-level families). Segment results are
  for exploration; the decision rests on the overall result.</figcaption></figure>
</section>
{% endif %}

{% if d.policy is not none %}
<section id="segment-policy">
  <h2>What to send next, per segment</h2>
  <table>
    <thead><tr><th>segment</th><th>send</th><th>basis</th><th class="n">lift</th>
    <th class="n">interval</th><th class="n">p adj.</th><th>evidence</th></tr></thead>
    <tbody>
    {% for r in d.policy.to_dict('records') %}
    <tr><td>{{ d.segments.get(r.segment_id, r.segment_id) }}</td><td><b>{{ r.send_arm }}</b></td>
      <td>{{ r.basis }}</td>
      {% if r.effect_scale == 'absolute' %}
      <td class="n">{{ r.estimate | num(4) }}</td>
      <td class="n">[{{ r.ci_low | num(4) }}, {{ r.ci_high | num(4) }}]</td>
      {% else %}
      <td class="n">{{ r.estimate | pct(1, True) }}</td>
      <td class="n">[{{ r.ci_low | pct(1, True) }}, {{ r.ci_high | pct(1, True) }}]</td>
      {% endif %}
      <td class="n">{{ r.p_value_adjusted | pval }}</td>
      <td class="muted">{{ r.evidence }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  <p class="note">The significant winner of the primary metric in each segment (segment-level
  correction, no guardrail harmed), otherwise the control.</p>
</section>
{% endif %}

<section id="funnel">
  <h2>Funnel per arm</h2>
  {% if plots['plot-funnel'] %}
  <figure><img id="plot-funnel" alt="Funnel from delivered to conversion per arm"
src="{{ plots['plot-funnel'] }}">
  <figcaption>Customers reaching each stage (at least one event), as a share of customers assigned;
  {{ d.events | num }} accepted events ({{ d.freshness.get('event_sources') or 'no source'
}}).</figcaption></figure>
  {% else %}<p class="muted">No outcome events yet.</p>{% endif %}
</section>

<div class="cols">
<section id="srm">
  <h2>Sample ratio check</h2>
  {% if plots['plot-srm'] %}
  <figure><img id="plot-srm" alt="Observed versus expected customers per arm"
src="{{ plots['plot-srm'] }}"></figure>
  {% if srm_p is not none %}
  <p>{% if srm_p < 0.001 %}<span class="badge" style="background:#8250df">mismatch</span>
    The arm sizes do not match the configured weights (χ² p = {{ srm_p | pval }} &lt; 0.001):
    the assignment is broken and the results are invalid.
  {% else %}<span class="badge" style="background:#1a7f37">ok</span> Arm sizes match the configured
    weights (χ² p = {{ srm_p | pval }}).{% endif %}</p>
  {% endif %}
  {% else %}<p class="muted">No assignments yet.</p>{% endif %}
</section>
<section id="freshness">
  <h2>Data freshness</h2>
  <table>
    <tr><th>run id</th><td><code>{{ d.run.get('invocation_id') or '—' }}</code></td></tr>
    <tr><th>last command</th><td>{{ d.run.get('command') or '—' }}
{% if d.run.get('generated_at') %} at {{ d.run.generated_at }}{% endif %}
      {%- if d.run.get('nodes') %} ({{ d.run.nodes }} nodes, {{ d.run.failed }} failed){% endif %}
</td></tr>
    <tr><th>database written</th><td>{{ d.freshness.get('database_modified') or '—' }}</td></tr>
    <tr><th>last assignment</th><td>{{ d.freshness.get('last_assigned_at') or '—' }}</td></tr>
    <tr><th>events</th><td>{{ d.events | num }}
{% if d.freshness.get('first_event_at') %}, {{ d.freshness.first_event_at }} → {{
d.freshness.last_event_at }}{% endif %}</td></tr>
  </table>
</section>
</div>

{% if plots['plot-power'] %}
<section id="power">
  <h2>Power achieved vs needed</h2>
  <figure><img id="plot-power" alt="Achieved power per arm and metric"
src="{{ plots['plot-power'] }}"></figure>
  <table><thead><tr><th>arm</th><th>metric</th><th class="n">MDE (relative)</th>
    <th class="n">customers per arm</th><th class="n">needed per arm</th><th class="n">power</th>
</tr></thead>
  <tbody>{% for r in power_rows %}<tr><td>{{ r.arm }}</td><td>{{ r.metric }}</td>
    <td class="n">{{ r.mde | pct(0) }}</td><td class="n">{{ r.n | num }}</td>
    <td class="n">{{ r.needed | num }}</td><td class="n">{{ r.power | pct(0) }}</td></tr>
{% endfor %}</tbody></table>
  <p class="note">"Needed" is the two-proportion sample size for the metric's MDE at the observed
  control rate, α divided by the number of comparisons, and {{ d.min_power | pct(0) }} power.</p>
</section>
{% endif %}

<section id="safety">
  <h2>Safety outcomes</h2>
  {% if plots['plot-safety'] %}
  <figure><img id="plot-safety" alt="Safety checks passed and blocked"
src="{{ plots['plot-safety'] }}"></figure>
  {% if blocked %}
  <h3>Blocked ({{ blocked | length }})</h3>
  <table><thead><tr><th>variant</th><th>segment</th><th>tone</th><th>check</th>
<th class="n">severity</th><th>reason</th></tr></thead>
  <tbody>{% for b in blocked %}<tr><td>{{ b.variant_id }}</td><td>{{ b.segment_id or '—' }}</td>
<td>{{ b.tone or '—' }}</td>
    <td>{{ b.check }}</td><td class="n">{{ b.severity }}</td><td>{{ b.reason }}</td></tr>
{% endfor %}</tbody></table>
  {% else %}<p>Every variant passed every check.</p>{% endif %}
  {% else %}<p class="muted">No safety screenings yet.</p>{% endif %}
</section>

<section id="variants">
  <h2>Approved variants ({{ variant_groups | map('last') | map('length') | sum }})</h2>
  <p class="note">Message templates as generated, one row per segment with its tones side by side:
  merge tags such as <code>{{ '{{ first_name }}' }}</code> are filled per customer at send time and
  are not shown here. Sources are the approved documents each variant cites.</p>
  {% for title, group in variant_groups %}
  <h3>{{ title }}</h3>
  <div class="grid">
  {% for v in group %}
    <div class="variant"><div><b>{{ v.tone }}</b> <span class="muted">{{ v.variant_id }}</span>
</div>
      <div class="subject">{{ v.subject }}</div>
      <div class="body">{{ v.body }}</div>
      {% if v.sources %}<div class="muted" style="margin-top:6px">Sources</div>
      <ul>{% for s in v.sources %}<li>{{ s }}</li>{% endfor %}</ul>{% endif %}
      <div class="muted" style="font-size:12px">{{ v.provider }} · {{ v.model }}</div>
    </div>
  {% endfor %}
  </div>
  {% else %}<p class="muted">No approved variants yet.</p>{% endfor %}
</section>

<section id="calls">
  <h2>Provider calls, tokens and cost</h2>
  {% if calls %}
  <div class="kpis">
    <div class="kpi"><div class="v">{{ calls.run.calls | num }}</div>
<div class="k">calls in run</div></div>
    <div class="kpi"><div class="v">{{ calls.run.cache_hits | num }}</div>
<div class="k">cache hits</div></div>
    <div class="kpi"><div class="v">{{ calls.run.input_tokens | num }}</div>
<div class="k">input tokens</div></div>
    <div class="kpi"><div class="v">{{ calls.run.output_tokens | num }}</div>
<div class="k">output tokens</div></div>
    <div class="kpi"><div class="v">${{ calls.run.cost_usd | num(4) }}</div>
<div class="k">cost of run</div></div>
    <div class="kpi"><div class="v">${{ calls.all.cost_usd | num(4) }}</div>
<div class="k">cost, all {{ calls.builds }} builds</div></div>
  </div>
  <table><thead><tr><th>step</th><th>provider</th><th>model</th><th class="n">calls</th>
<th class="n">cache hits</th>
    <th class="n">input tokens</th><th class="n">output tokens</th><th class="n">cost (USD)</th>
<th class="n">avg latency (ms)</th><th class="n">failed</th></tr></thead>
  <tbody>{% for r in calls.rows %}<tr><td>{{ r.step }}</td><td>{{ r.provider }}</td><td>
{{ r.model }}</td>
    <td class="n">{{ r.calls | num }}</td><td class="n">{{ r.cache_hits | num }}</td><td class="n">
{{ r.input_tokens | num }}</td>
    <td class="n">{{ r.output_tokens | num }}</td><td class="n">{{ r.cost_usd | num(4) }}</td>
    <td class="n">{{ r.avg_latency_ms | num(1) }}</td><td class="n">{{ r.failed | num }}</td></tr>
{% endfor %}</tbody></table>
  <p class="note">Build <code>{{ calls.run_id }}
</code>; the <code>llm_calls</code> table keeps every build's calls.</p>
  {% else %}<p class="muted">No provider calls recorded yet.</p>{% endif %}
</section>
{% endif %}
</main>
<footer>CPO {{ cpo_version }} · generated from the project database and target/ artifacts only ·
no customer names, emails or rendered messages are included</footer>
</body>
</html>
"""

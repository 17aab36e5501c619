"""Experiment results: each treatment arm against control, per metric, overall and per segment.

Reads the sufficient statistics in ``experiment_metrics`` and the arm sizes in ``assignments``;
every number comes from `cpo.experiments.stats` on those sums, so it can be recomputed by hand:

* **Test**: p-values always test the difference of means: Welch t (CUPED-adjusted when the
  metric has a ``covariate``, θ pooled over the two arms compared), the two-proportion z test
  for proportions (Fisher's exact test when an expected count is below 5). ``effect`` only
  changes what ``estimate`` and its interval report: the relative lift m_t / m_c − 1 with
  Fieller's interval (never below −100 %, excludes 0 exactly when the test rejects), or the
  difference m_t − m_c.
* **Families**: primary metrics decide; their family is treatment arms × primary metrics,
  corrected with ``correction`` (holm default). Secondary metrics are corrected within their own
  family (arms × secondary metrics) and never decide (decision ``info``). Guardrails are tested
  one-sided for harm at α, uncorrected (more sensitive, the safe side): a harmed guardrail makes
  the arm ``no_ship``. Segment rows form their own families (segments × arms × metrics).
* **Power** only qualifies a non-significant primary result: at the metric's relative ``mde``,
  observed control variance and achieved sizes, at α / primary-family size. Power ≥
  ``min_power``: ``no_ship`` (no effect as large as the MDE); below: ``inconclusive:
  under-powered``. It never blocks a significant result.
* **Validity**: SRM (chi-square of arm sizes against the relative ``weight``s) p < 0.001, or
  more than ``max_rejected_share`` (default 20 %) of observed event or outcome rows rejected,
  makes every row ``invalid`` with the reason.
* **Simulated outcomes** (``source = 'simulated'`` in stg_events): every decision is
  ``simulated``; ``evidence_decision`` keeps what the data would support.
* **Bayesian**: `cpo.experiments.stats.bayesian_test`, flat prior; ``chance_to_win`` in the metric's
  direction and the expected losses.
* One arm only: nothing to compare, the table is empty and the log says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from _experiment_design import ExperimentConfig, Metric, experiment_config, experiment_settings

from cpo.experiments import stats
from cpo.experiments.stats.distributions import norm_cdf, norm_isf

OVERALL = None
SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("metric", pa.string()),
        ("metric_role", pa.string()),
        ("metric_type", pa.string()),
        ("arm", pa.string()),
        ("segment_id", pa.string()),
        ("n_control", pa.int64()),
        ("n_treatment", pa.int64()),
        ("control_mean", pa.float64()),
        ("treatment_mean", pa.float64()),
        ("effect_scale", pa.string()),
        ("estimate", pa.float64()),
        ("absolute_effect", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_value", pa.float64()),
        ("p_value_adjusted", pa.float64()),
        ("method", pa.string()),
        ("cuped", pa.bool_()),
        ("chance_to_win", pa.float64()),
        ("risk_control", pa.float64()),
        ("risk_treatment", pa.float64()),
        ("srm_p_value", pa.float64()),
        ("power", pa.float64()),
        ("metric_direction", pa.string()),
        ("test_family", pa.string()),
        ("alternative", pa.string()),
        ("evidence_decision", pa.string()),
        ("decision", pa.string()),
        ("decision_reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class Comparison:
    """One treatment-vs-control comparison before multiple-testing adjustment."""

    metric: Metric
    arm: str
    segment_id: str | None
    n_control: int
    n_treatment: int
    freq: stats.FrequentistResult | None
    bayes: stats.BayesianResult | None
    cuped: bool
    power: float
    reason: str | None


# --------------------------------------------------------------------------- statistics


def _stats(metric: Metric, row: Mapping[str, Any]) -> stats.Stats:
    n = int(row["n"])
    if metric.type == "proportion":
        return stats.ProportionStats(n, round(row["sum"]))
    if metric.type == "mean":
        return stats.MeanStats(n, float(row["sum"]), float(row["sum_squares"]))
    return stats.RatioStats(
        n,
        *(float(row[k]) for k in ("sum_num", "sum_num_sq", "sum_den", "sum_den_sq", "sum_num_den")),
    )


def _cuped_stats(row: Mapping[str, Any]) -> stats.CupedStats:
    return stats.CupedStats(
        int(row["n"]),
        float(row["sum"]),
        float(row["sum_squares"]),
        float(row["sum_x"]),
        float(row["sum_x2"]),
        float(row["sum_xy"]),
    )


def _power(metric: Metric, control: stats.Stats, n_t: int, alpha: float, exact: bool) -> float:
    """Power at the metric's MDE (see the module docstring); NaN when undefined."""
    mc, n_c = control.mean, control.n
    if not (n_c > 0 and n_t > 0) or math.isnan(mc) or mc == 0:
        return math.nan
    delta = metric.sign * metric.mde * abs(mc)
    if exact:  # an unadjusted proportion: the planning formula of cpo.experiments.stats
        if not (0 < mc < 1 and 0 < mc + delta < 1):
            return math.nan
        return stats.power(mc, delta, 2 / (1 / n_c + 1 / n_t), alpha)
    variance = control.variance
    if math.isnan(variance) or variance <= 0:
        return math.nan
    se = math.sqrt(variance / n_c + variance / n_t)
    return norm_cdf(abs(delta) / se - norm_isf(alpha / 2))


def compare(
    metric: Metric,
    control: Mapping[str, Any] | None,
    treatment: Mapping[str, Any] | None,
    *,
    arm: str,
    segment_id: str | None,
    config: ExperimentConfig,
    power_alpha: float,
    alternative: str = "two-sided",
) -> Comparison:
    """Test one arm against control on one metric from their `experiment_metrics` rows."""
    n_c = int(control["n"]) if control else 0
    n_t = int(treatment["n"]) if treatment else 0
    empty = [name for name, n in ((config.control, n_c), (arm, n_t)) if n == 0]
    if empty:
        why = f"no customers assigned to arm {' and '.join(repr(e) for e in empty)}"
        return Comparison(metric, arm, segment_id, n_c, n_t, None, None, False, math.nan, why)
    assert control is not None and treatment is not None
    c, t = _stats(metric, control), _stats(metric, treatment)
    use_cuped = bool(metric.covariate) and n_c >= 2 and n_t >= 2
    if use_cuped:
        adjusted = stats.cuped(_cuped_stats(control), _cuped_stats(treatment))
        c, t = adjusted.control, adjusted.treatment
    if isinstance(c, stats.ProportionStats) and isinstance(t, stats.ProportionStats):
        # Proportions stay proportions unless CUPED turned them into adjusted means.
        freq = stats.proportion_test(
            c, t, relative=config.relative, alpha=config.alpha, alternative=alternative
        )
    else:
        freq = stats.frequentist_test(
            c, t, relative=config.relative, alpha=config.alpha, alternative=alternative
        )
    bayes = stats.bayesian_test(c, t, relative=config.relative)
    exact = metric.type == "proportion" and not use_cuped
    power = _power(metric, c, n_t, power_alpha, exact)
    reason = freq.reason
    if reason is None and not _finite(freq.p_value):
        reason = "the test is undefined for these data"
    return Comparison(metric, arm, segment_id, n_c, n_t, freq, bayes, use_cuped, power, reason)


# --------------------------------------------------------------------------- decisions


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def harm_alternative(metric: Metric) -> str:
    """The one-sided alternative under which a guardrail is harmed."""
    return "less" if metric.sign > 0 else "greater"


def _harmed(comp: Comparison, alpha: float) -> bool:
    """A guardrail significantly worse: one-sided harm p < alpha."""
    f = comp.freq
    return f is not None and _finite(f.p_value) and f.p_value < alpha


def _primary(
    comp: Comparison, p_adjusted: float | None, harmed: list[str], config: ExperimentConfig
) -> tuple[str, str]:
    """The evidence decision of a primary comparison (before validity and simulation)."""
    alpha, m, f = config.alpha, comp.metric, comp.freq
    if comp.reason is not None and (f is None or not _finite(f.p_value)):
        return "inconclusive", comp.reason
    if f is None or not _finite(p_adjusted):
        return "inconclusive", "the test is undefined for these data"
    assert p_adjusted is not None
    better = f.absolute_effect * m.sign > 0
    if p_adjusted < alpha and not better:
        return "no_ship", f"{m.name} is significantly worse (adjusted p = {p_adjusted:.3g})"
    if harmed:
        names = ", ".join(harmed)
        return "no_ship", f"guardrail {names} significantly harmed (one-sided p < {alpha})"
    if p_adjusted < alpha:
        return "ship", (
            f"{m.name} significantly better (adjusted p = {p_adjusted:.3g} < {alpha}), "
            "no guardrail harmed"
        )
    shown = f"{comp.power:.2f}" if _finite(comp.power) else "undefined"
    if _finite(comp.power) and comp.power >= config.min_power:
        return "no_ship", (
            f"no effect as large as the MDE: adjusted p = {p_adjusted:.3g} >= {alpha} with power "
            f"{shown} to detect a {m.mde:.0%} change"
        )
    return "inconclusive", (
        f"under-powered: not significant (adjusted p = {p_adjusted:.3g}) and power {shown} < "
        f"{config.min_power} to detect a {m.mde:.0%} change; more customers are needed"
    )


def _secondary(comp: Comparison, p_adjusted: float | None, alpha: float) -> tuple[str, str]:
    f = comp.freq
    if f is None or not _finite(p_adjusted):
        return "info", comp.reason or "the test is undefined for these data"
    assert p_adjusted is not None
    if p_adjusted < alpha:
        way = "better" if f.absolute_effect * comp.metric.sign > 0 else "worse"
        text = f"significantly {way} (adjusted p = {p_adjusted:.3g} within the secondary family)"
    else:
        text = f"not significant (adjusted p = {p_adjusted:.3g})"
    return "info", text + "; secondary metrics inform, never decide"


def _guardrail(comp: Comparison, alpha: float) -> tuple[str, str]:
    f = comp.freq
    if f is None or not _finite(f.p_value):
        return "info", comp.reason or "the test is undefined for these data"
    if _harmed(comp, alpha):
        return "no_ship", (
            f"guardrail {comp.metric.name} harmed (one-sided p = {f.p_value:.3g} < {alpha})"
        )
    return "info", f"no harm detected (one-sided p = {f.p_value:.3g})"


# --------------------------------------------------------------------------- assembly


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row(
    experiment_id: str,
    comp: Comparison,
    p_adj: float | None,
    srm_p: float,
    evidence: tuple[str, str],
    decision: tuple[str, str],
    alternative: str,
    config: ExperimentConfig,
) -> dict[str, Any]:
    f, b, m = comp.freq, comp.bayes, comp.metric
    ctw = risk_c = risk_t = math.nan
    if b is not None:
        ctw, (risk_c, risk_t) = b.chance_to_win, b.risk
        if m.sign < 0:  # "win" means a decrease
            ctw, risk_c, risk_t = 1.0 - ctw, risk_t, risk_c
    family = {"primary": "primary", "secondary": "secondary", "guardrail": "guardrail"}[m.role]
    values = {
        "experiment_id": experiment_id,
        "metric": m.name,
        "metric_role": m.role,
        "metric_type": m.type,
        "arm": comp.arm,
        "segment_id": comp.segment_id,
        "n_control": comp.n_control,
        "n_treatment": comp.n_treatment,
        "control_mean": f.control_mean if f else math.nan,
        "treatment_mean": f.treatment_mean if f else math.nan,
        "effect_scale": "relative" if config.relative else "absolute",
        "estimate": f.estimate if f else math.nan,
        "absolute_effect": f.absolute_effect if f else math.nan,
        "ci_low": f.ci_low if f else math.nan,
        "ci_high": f.ci_high if f else math.nan,
        "p_value": f.p_value if f else math.nan,
        "p_value_adjusted": p_adj if p_adj is not None else math.nan,
        "method": (f.method + ("+cuped" if comp.cuped else "")) if f else None,
        "cuped": comp.cuped,
        "chance_to_win": ctw,
        "risk_control": risk_c,
        "risk_treatment": risk_t,
        "srm_p_value": srm_p,
        "power": comp.power,
        "metric_direction": m.direction,
        "test_family": family,
        "alternative": alternative,
        "evidence_decision": evidence[0],
        "decision": decision[0],
        "decision_reason": decision[1],
    }
    return {k: _clean(v) for k, v in values.items()}


def _srm(sizes: Mapping[str, int], config: ExperimentConfig) -> float:
    arms = [a for a, n in sizes.items() if n > 0]
    if len(arms) < 2:
        return math.nan
    return stats.srm_pvalue([sizes[a] for a in arms], [config.weight(a) for a in arms])


@dataclass(frozen=True)
class Validity:
    """What overrides every decision: an ingestion problem, or simulated outcomes."""

    invalid_reason: str | None = None
    simulated: bool = False


def _final(evidence: tuple[str, str], srm_p: float, validity: Validity) -> tuple[str, str]:
    if validity.invalid_reason:
        return "invalid", validity.invalid_reason
    if _finite(srm_p) and srm_p < stats.SRM_ALPHA:
        return "invalid", (
            f"sample ratio mismatch (SRM p = {srm_p:.2g} < {stats.SRM_ALPHA}): arm sizes do not "
            "match the configured weights; fix the assignment before reading any result"
        )
    if validity.simulated:
        return "simulated", (
            f"outcomes are simulated, not observed: no decision (the simulated data would "
            f"give {evidence[0]}: {evidence[1]})"
        )
    return evidence


def _level(
    comps: list[Comparison],
    srm: Mapping[str | None, float],
    experiment_id: str,
    config: ExperimentConfig,
    validity: Validity,
) -> list[dict[str, Any]]:
    """Adjust each family's p-values within the family, then decide each comparison."""
    adjusted: dict[int, float | None] = {}
    for role in ("primary", "secondary"):
        idx = [i for i, c in enumerate(comps) if c.metric.role == role]
        raw = [f.p_value if (f := comps[i].freq) else None for i in idx]
        for i, p in zip(idx, stats.adjust_pvalues(raw, config.correction), strict=True):
            adjusted[i] = p
    harmed: dict[tuple[str, str | None], list[str]] = {}
    for i, c in enumerate(comps):
        if c.metric.role == "guardrail":
            adjusted[i] = c.freq.p_value if c.freq else None
            if _harmed(c, config.alpha):
                harmed.setdefault((c.arm, c.segment_id), []).append(c.metric.name)
    rows = []
    for i, comp in enumerate(comps):
        p_adj, role = adjusted.get(i), comp.metric.role
        if role == "primary":
            evidence = _primary(comp, p_adj, harmed.get((comp.arm, comp.segment_id), []), config)
            alternative = "two-sided"
        elif role == "secondary":
            evidence, alternative = _secondary(comp, p_adj, config.alpha), "two-sided"
        else:
            evidence = _guardrail(comp, config.alpha)
            alternative = f"one-sided harm ({harm_alternative(comp.metric)})"
        srm_p = srm.get(comp.segment_id, math.nan)
        # A mismatch overall invalidates every row, segment rows included.
        worst = min((p for p in (srm_p, srm.get(OVERALL, math.nan)) if _finite(p)), default=srm_p)
        decision = _final(evidence, worst, validity)
        rows.append(
            _row(experiment_id, comp, p_adj, srm_p, evidence, decision, alternative, config)
        )
    return rows


def analyse(
    metrics_rows: list[dict[str, Any]],
    sizes: list[tuple[str, str, str, int]],
    config: ExperimentConfig,
    validity: Validity = Validity(),
) -> list[dict[str, Any]]:
    """All result rows from `experiment_metrics` rows and (experiment, arm, segment, n) sizes."""
    index = {(r["experiment_id"], r["metric"], r["segment_id"], r["arm"]): r for r in metrics_rows}
    experiments = sorted({s[0] for s in sizes}) or [config.id]
    rows: list[dict[str, Any]] = []
    for experiment_id in experiments:
        arm_n: dict[str | None, dict[str, int]] = {OVERALL: {}}
        for e, arm, segment, n in sizes:
            if e == experiment_id:
                arm_n[OVERALL][arm] = arm_n[OVERALL].get(arm, 0) + n
                arm_n.setdefault(segment, {})[arm] = n
        segments = sorted(s for s in arm_n if s is not OVERALL)
        arms = [a.name for a in config.treatments]
        arms += sorted(a for a in arm_n[OVERALL] if a not in arms and a != config.control)
        srm = {s: _srm(arm_n[s], config) for s in arm_n}
        primaries = max(len(config.family("primary")), 1)
        secondaries = max(len(config.family("secondary")), 1)
        for level in ([OVERALL], segments):
            k = len(arms) * (1 if level == [OVERALL] else max(len(segments), 1))
            power_alpha = {
                "primary": config.alpha / max(k * primaries, 1),
                "secondary": config.alpha / max(k * secondaries, 1),
                "guardrail": config.alpha,
            }
            comps = [
                compare(
                    m,
                    index.get((experiment_id, m.name, s, config.control)),
                    index.get((experiment_id, m.name, s, arm)),
                    arm=arm,
                    segment_id=s,
                    config=config,
                    power_alpha=power_alpha[m.role],
                    alternative=harm_alternative(m) if m.role == "guardrail" else "two-sided",
                )
                for s in level
                for arm in arms
                for m in config.metrics
            ]
            rows.extend(_level(comps, srm, experiment_id, config, validity))
    return rows


def _validity(ctx: Any, config: ExperimentConfig) -> Validity:
    """Rejected observed rows (events and outcome-table rows) and simulated outcomes."""
    summary = ctx.ref("event_summary").fetchall()
    observed = [(status, int(n)) for source, status, n in summary if source == "observed"]
    rejected = {s: n for s, n in observed if s not in ("accepted", "duplicate")}
    outcome_rows, outcome_unknown = ctx.sql("""
        select count(*), count(*) filter (where a.customer_id is null)
        from "observed_outcomes" as o
        left join (select distinct cast(customer_id as varchar) as customer_id
                   from "assignments") as a using (customer_id)
    """).fetchone()
    ctx.ref("observed_outcomes")
    ctx.ref("assignments")
    by_source = {
        "observed events": (rejected, sum(n for _, n in observed)),
        "outcome-table rows": (
            {"outcome_row_of_unassigned_customer": int(outcome_unknown)} if outcome_unknown else {},
            int(outcome_rows),
        ),
    }
    reasons = []
    for name, (counts, total) in by_source.items():
        if counts:
            ctx.log.warning(f"rejected {name}", extra={"by_reason": counts, "total": total})
        share = sum(counts.values()) / total if total else 0.0
        if share > config.max_rejected_share:
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
            reasons.append(f"{share:.0%} of {name} were rejected ({shown})")
    reason = None
    if reasons:
        reason = (
            f"{'; '.join(reasons)}: more than max_rejected_share "
            f"{config.max_rejected_share:.0%}; fix the files (or attribution_days) before "
            "reading any result"
        )
    simulated = bool(ctx.ref("stg_events").filter("source = 'simulated'").limit(1).fetchall())
    return Validity(reason, simulated)


def model(ctx: Any) -> pa.Table:
    """experiment_results from experiment_metrics and assignments."""
    tones = ctx.var("generation.tones", [], expect=list)
    ctx.var("experiment", expect=dict)  # required: this step analyses a declared experiment
    config = experiment_config(
        experiment_settings(ctx), ["control", *tones], error=ctx.config.document.error
    )
    if not config.metrics:
        ctx.log.warning("no metrics under vars.experiment.metrics: experiment_results is empty")
        return SCHEMA.empty_table()
    if len(config.arms) < 2:
        ctx.log.warning(
            "one arm only: nothing to compare, experiment_results is empty",
            extra={"arm": config.arms[0].name},
        )
        return SCHEMA.empty_table()
    metrics = ctx.ref("experiment_metrics").to_arrow_table().to_pylist()
    ctx.ref("assignments")
    sizes = ctx.sql("""
        select cast(experiment_id as varchar), cast(arm as varchar),
               coalesce(cast(segment_id as varchar), 'unsegmented'), count(*)
        from "assignments" group by all order by all
    """).fetchall()
    validity = _validity(ctx, config)
    rows = analyse(metrics, sizes, config, validity)
    decisions: dict[str, int] = {}
    for r in rows:
        if r["segment_id"] is None:
            decisions[r["decision"]] = decisions.get(r["decision"], 0) + 1
    ctx.log.info("experiment results", extra={"rows": len(rows), "overall_decisions": decisions})
    return pa.Table.from_pylist(rows, schema=SCHEMA)

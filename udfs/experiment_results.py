"""Experiment results: each treatment arm against control, per metric, overall and per segment.

Reads the sufficient statistics in ``experiment_metrics`` and the arm sizes in ``assignments``;
every number comes from `cpo.stats` on those sums, so it can be recomputed by hand:

* **Test**: CUPED-adjusted Welch t-test when the metric has a ``covariate`` (θ pooled over the
  two arms compared); otherwise `cpo.stats.proportion_test` for proportions (Fisher's exact test
  when an expected count is below 5) and `cpo.stats.frequentist_test` for means and ratios.
  ``estimate`` is the relative lift (``effect: absolute`` in the settings for the difference).
* **Bayesian**: `cpo.stats.bayesian_test` on the same statistics, flat prior. ``chance_to_win``
  is the probability that the treatment is *better* in the metric's direction, and the risks are
  the expected losses (in that direction) of choosing control or treatment.
* **Multiple testing**: overall p-values are adjusted across treatment arms × metrics with the
  configured correction (``holm`` default); segment p-values across arms × metrics × segments.
* **SRM**: chi-square of arm sizes against the configured weights, over arms that have
  customers (an arm without customers is reported as such, not as a mismatch).
* **Power**: at the metric's relative ``mde``, with the observed control variance (CUPED-adjusted
  when used) and the achieved arm sizes, at α divided by the family size (Bonferroni bound of the
  correction), i.e. the power the decision rule actually has.
* **Decision**: ``invalid`` if SRM p < 0.001; ``inconclusive`` when the comparison is undefined
  (empty arm, zero control, no events) or under-powered (power < ``min_power``);
  ``no_ship`` when significantly worse, when a guardrail metric of the same arm is worse at
  unadjusted p < α, or when a well-powered test finds no significant effect; ``ship`` only when
  the adjusted p < α in the good direction, power ≥ ``min_power`` and no guardrail is worse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from _experiment_design import ExperimentConfig, Metric, experiment_config, family_size
from scipy import stats as sps

from cpo import stats

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
    if exact:  # an unadjusted proportion: the planning formula of cpo.stats
        if not (0 < mc < 1 and 0 < mc + delta < 1):
            return math.nan
        return stats.power(mc, delta, 2 / (1 / n_c + 1 / n_t), alpha)
    variance = control.variance
    if math.isnan(variance) or variance <= 0:
        return math.nan
    se = math.sqrt(variance / n_c + variance / n_t)
    return float(sps.norm.cdf(abs(delta) / se - sps.norm.isf(alpha / 2)))


def compare(
    metric: Metric,
    control: Mapping[str, Any] | None,
    treatment: Mapping[str, Any] | None,
    *,
    arm: str,
    segment_id: str | None,
    config: ExperimentConfig,
    power_alpha: float,
) -> Comparison:
    """Test one arm against control on one metric from their `experiment_metrics` rows."""
    n_c = int(control["n"]) if control else 0
    n_t = int(treatment["n"]) if treatment else 0
    empty = [name for name, n in ((config.control, n_c), (arm, n_t)) if n == 0]
    if empty:
        reason = f"no customers assigned to arm {' and '.join(repr(e) for e in empty)}"
        return Comparison(metric, arm, segment_id, n_c, n_t, None, None, False, math.nan, reason)
    assert control is not None and treatment is not None
    c, t = _stats(metric, control), _stats(metric, treatment)
    use_cuped = bool(metric.covariate) and n_c >= 2 and n_t >= 2
    if use_cuped:
        adjusted = stats.cuped(_cuped_stats(control), _cuped_stats(treatment))
        c, t = adjusted.control, adjusted.treatment
        freq = stats.frequentist_test(c, t, relative=config.relative, alpha=config.alpha)
    elif metric.type == "proportion":
        freq = stats.proportion_test(c, t, relative=config.relative, alpha=config.alpha)
    else:
        freq = stats.frequentist_test(c, t, relative=config.relative, alpha=config.alpha)
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


def _worse(comp: Comparison, alpha: float) -> bool:
    """Significantly worse in the metric's direction at unadjusted p < alpha."""
    f = comp.freq
    return (
        comp.reason is None
        and f is not None
        and _finite(f.p_value)
        and f.p_value < alpha
        and f.absolute_effect * comp.metric.sign < 0
    )


def decide(
    comp: Comparison,
    p_adjusted: float | None,
    srm_p: float,
    guardrails_worse: list[str],
    config: ExperimentConfig,
) -> tuple[str, str]:
    """The decision and its reason for one comparison."""
    alpha, m = config.alpha, comp.metric
    if _finite(srm_p) and srm_p < stats.SRM_ALPHA:
        return "invalid", (
            f"sample ratio mismatch (SRM p = {srm_p:.2g} < {stats.SRM_ALPHA}): "
            "arm sizes do not match the configured weights; fix the assignment "
            "before reading any result"
        )
    if comp.reason is not None:
        return "inconclusive", comp.reason
    if comp.freq is None or not _finite(comp.freq.estimate):
        return "inconclusive", "the effect is undefined for these data"
    if not _finite(p_adjusted):
        return "inconclusive", "no adjusted p-value"
    assert p_adjusted is not None and comp.freq is not None
    better = comp.freq.absolute_effect * m.sign > 0
    significant = p_adjusted < alpha
    if significant and not better:
        return (
            "no_ship",
            f"{m.name} is significantly worse (adjusted p = {p_adjusted:.3g} < {alpha})",
        )
    others = [g for g in guardrails_worse if g != m.name]
    if others:
        return "no_ship", f"guardrail {', '.join(others)} significantly worse (p < {alpha})"
    powered = _finite(comp.power) and comp.power >= config.min_power
    if not powered:
        shown = f"{comp.power:.2f}" if _finite(comp.power) else "undefined"
        return "inconclusive", (
            f"under-powered: power {shown} < {config.min_power} to detect a "
            f"{m.mde:.0%} change; more customers are needed"
        )
    if not significant:
        return "no_ship", (
            f"no significant effect (adjusted p = {p_adjusted:.3g} >= {alpha}) "
            f"although the test had power {comp.power:.2f} for a {m.mde:.0%} change"
        )
    return "ship", (
        f"{m.name} significantly better (adjusted p = {p_adjusted:.3g} < {alpha}), "
        f"power {comp.power:.2f}, no guardrail worse"
    )


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
    decision: tuple[str, str],
    config: ExperimentConfig,
) -> dict[str, Any]:
    f, b, m = comp.freq, comp.bayes, comp.metric
    ctw = risk_c = risk_t = math.nan
    if b is not None:
        ctw, (risk_c, risk_t) = b.chance_to_win, b.risk
        if m.sign < 0:  # "win" means a decrease
            ctw, risk_c, risk_t = 1.0 - ctw, risk_t, risk_c
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
        "decision": decision[0],
        "decision_reason": decision[1],
    }
    return {k: _clean(v) for k, v in values.items()}


def _srm(sizes: Mapping[str, int], config: ExperimentConfig) -> float:
    arms = [a for a, n in sizes.items() if n > 0]
    if len(arms) < 2:
        return math.nan
    return stats.srm_pvalue([sizes[a] for a in arms], [config.weight(a) for a in arms])


def _family(
    comps: list[Comparison],
    srm: Mapping[str | None, float],
    experiment_id: str,
    config: ExperimentConfig,
) -> list[dict[str, Any]]:
    """Adjust one family's p-values, then decide each comparison."""
    raw = [c.freq.p_value if c.freq and c.reason is None else None for c in comps]
    adjusted = stats.adjust_pvalues(raw, config.correction)
    worse: dict[tuple[str, str | None], list[str]] = {}
    for c in comps:
        if c.metric.role == "guardrail" and _worse(c, config.alpha):
            worse.setdefault((c.arm, c.segment_id), []).append(c.metric.name)
    rows = []
    for comp, p_adj in zip(comps, adjusted, strict=True):
        srm_p = srm.get(comp.segment_id, math.nan)
        decision = decide(comp, p_adj, srm_p, worse.get((comp.arm, comp.segment_id), []), config)
        rows.append(_row(experiment_id, comp, p_adj, srm_p, decision, config))
    return rows


def analyse(
    metrics_rows: list[dict[str, Any]],
    sizes: list[tuple[str, str, str, int]],
    config: ExperimentConfig,
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
        base_alpha = config.alpha / family_size(config)
        for level in ([OVERALL], segments):
            alpha = base_alpha / (1 if level == [OVERALL] else max(len(segments), 1))
            comps = [
                compare(
                    m,
                    index.get((experiment_id, m.name, s, config.control)),
                    index.get((experiment_id, m.name, s, arm)),
                    arm=arm,
                    segment_id=s,
                    config=config,
                    power_alpha=alpha,
                )
                for s in level
                for arm in arms
                for m in config.metrics
            ]
            rows.extend(_family(comps, srm, experiment_id, config))
    return rows


def model(ctx: Any) -> pa.Table:
    """experiment_results from experiment_metrics and assignments."""
    tones = ctx.var("generation.tones", [], expect=list)
    config = experiment_config(
        ctx.var("experiment", expect=dict), ["control", *tones], error=ctx.config.document.error
    )
    if not config.metrics:
        ctx.log.warning("no metrics under vars.experiment.metrics: experiment_results is empty")
        return SCHEMA.empty_table()
    metrics = ctx.ref("experiment_metrics").to_arrow_table().to_pylist()
    ctx.ref("assignments")
    sizes = ctx.sql("""
        select cast(experiment_id as varchar), cast(arm as varchar),
               coalesce(cast(segment_id as varchar), 'unsegmented'), count(*)
        from "assignments" group by all order by all
    """).fetchall()
    rows = analyse(metrics, sizes, config)
    decisions: dict[str, int] = {}
    for r in rows:
        if r["segment_id"] is None:
            decisions[r["decision"]] = decisions.get(r["decision"], 0) + 1
    ctx.log.info("experiment results", extra={"rows": len(rows), "overall_decisions": decisions})
    return pa.Table.from_pylist(rows, schema=SCHEMA)

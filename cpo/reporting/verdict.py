"""The report's judgements: the headline decision, power achieved versus needed, call costs.

Pure functions of `cpo.reporting.data.ReportData`; the HTML sections
(`cpo.reporting.sections`) show what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from cpo.errors import CPOError
from cpo.reporting.data import ReportData
from cpo.reporting.plots import finite, overall_results, primary_metric


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


def power_rows(data: ReportData) -> list[dict[str, Any]]:
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
        p: Any = getattr(r, "control_mean", None)
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


def call_summary(calls: pd.DataFrame | None, run_id: str | None) -> dict[str, Any] | None:
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

"""Simulated experiments with known truth: coverage, family-wise error and CUPED behaviour.

Seeded, so deterministic; the bands are wide enough (several simulation standard errors) that a
correct implementation passes for any seed, and narrow enough that a wrong convention fails.
"""

from __future__ import annotations

import math

import numpy as np

from cpo.experiments.stats import (
    MeanStats,
    ProportionStats,
    adjust_pvalues,
    cuped_adjust,
    frequentist_test,
)

SIMS = 2000  # coverage sd ≈ √(0.95·0.05/2000) ≈ 0.005, so 0.93–0.97 is a ±4 sd band


def _coverage(hits: list[bool]) -> float:
    return float(np.mean(hits))


def test_absolute_mean_intervals_cover_the_truth() -> None:
    rng = np.random.default_rng(2024)
    nc, nt, true_effect = 60, 90, 0.5
    c = rng.normal(10.0, 2.0, (SIMS, nc))
    t = rng.normal(10.0 + true_effect, 3.0, (SIMS, nt))  # unequal variances: Welch territory
    hits = []
    for ci, ti in zip(c, t, strict=True):
        res = frequentist_test(MeanStats.from_values(ci), MeanStats.from_values(ti), relative=False)
        hits.append(res.ci_low <= true_effect <= res.ci_high)
    assert 0.93 <= _coverage(hits) <= 0.97


def test_relative_proportion_intervals_cover_the_truth() -> None:
    rng = np.random.default_rng(99)
    n, pc, pt = 4000, 0.10, 0.12
    successes_c = rng.binomial(n, pc, SIMS)
    successes_t = rng.binomial(n, pt, SIMS)
    truth = (pt - pc) / pc
    hits = [
        (r := frequentist_test(ProportionStats(n, int(a)), ProportionStats(n, int(b)))).ci_low
        <= truth
        <= r.ci_high
        for a, b in zip(successes_c, successes_t, strict=True)
    ]
    assert 0.93 <= _coverage(hits) <= 0.97


def test_sequential_intervals_cover_at_least_nominal() -> None:
    rng = np.random.default_rng(5)
    n, pc, pt = 2000, 0.2, 0.22
    successes_c = rng.binomial(n, pc, 500)
    successes_t = rng.binomial(n, pt, 500)
    hits = []
    for a, b in zip(successes_c, successes_t, strict=True):
        res = frequentist_test(
            ProportionStats(n, int(a)), ProportionStats(n, int(b)), relative=False, sequential=True
        )
        hits.append(res.ci_low <= pt - pc <= res.ci_high)
    assert _coverage(hits) >= 0.97  # a confidence sequence is conservative at a single look


def test_holm_controls_family_wise_error_with_three_arms() -> None:
    rng = np.random.default_rng(11)
    sims, n, p, alpha = 2000, 1000, 0.1, 0.05
    counts = rng.binomial(n, p, (sims, 4))  # column 0 is the shared control; no real effect
    any_raw = any_holm = 0
    for row in counts:
        control = ProportionStats(n, int(row[0]))
        pvalues = [
            frequentist_test(control, ProportionStats(n, int(k)), relative=False).p_value
            for k in row[1:]
        ]
        any_raw += min(pvalues) < alpha
        any_holm += min(adjust_pvalues(pvalues, "holm")) < alpha  # type: ignore[type-var]
    se = math.sqrt(alpha * (1 - alpha) / sims)
    assert any_holm / sims <= alpha + 3 * se
    assert any_raw / sims > alpha + 3 * se  # without correction the family-wise rate is inflated


def test_cuped_shrinks_standard_error_and_stays_unbiased() -> None:
    rng = np.random.default_rng(21)
    sims, n, effect, rho = 500, 400, 0.3, 0.8
    ses_raw, ses_cuped, estimates, hits = [], [], [], []
    for _ in range(sims):
        x = rng.normal(0.0, 1.0, (2, n))
        y = rho * x + math.sqrt(1 - rho**2) * rng.normal(0.0, 1.0, (2, n)) + 5.0
        y[1] += effect
        raw = frequentist_test(
            MeanStats.from_values(y[0]), MeanStats.from_values(y[1]), relative=False
        )
        adj = cuped_adjust(y[0], x[0], y[1], x[1])
        res = frequentist_test(adj.control, adj.treatment, relative=False)
        ses_raw.append(raw.se)
        ses_cuped.append(res.se)
        estimates.append(res.estimate)
        hits.append(res.ci_low <= effect <= res.ci_high)
    # Theory: se shrinks by √(1 − ρ²) = 0.6.
    assert np.mean(ses_cuped) / np.mean(ses_raw) < 0.65
    tolerance = 4 * np.std(estimates) / math.sqrt(sims)
    assert abs(np.mean(estimates) - effect) < tolerance
    assert 0.92 <= _coverage(hits) <= 0.98


def test_relative_intervals_of_skewed_means_cover_never_below_minus_one_and_agree() -> None:
    """Fieller's relative interval on a rare, skewed outcome (spend: mostly zeros)."""
    rng = np.random.default_rng(7)
    n, p_c, p_t, mean_spend = 3000, 0.03, 0.036, 60.0
    truth = p_t / p_c - 1
    hits, agree = [], []
    for _ in range(SIMS):
        yc = (rng.random(n) < p_c) * rng.gamma(2.0, mean_spend / 2, n)
        yt = (rng.random(n) < p_t) * rng.gamma(2.0, mean_spend / 2, n)
        res = frequentist_test(MeanStats.from_values(yc), MeanStats.from_values(yt))
        assert res.ci_low >= -1.0
        hits.append(res.ci_low <= truth <= res.ci_high)
        agree.append((res.p_value < 0.05) == (res.ci_low > 0 or res.ci_high < 0))
    assert 0.93 <= _coverage(hits) <= 0.97
    assert all(agree)  # the interval excludes 0 exactly when the test rejects


def test_absolute_proportion_intervals_cover_the_truth() -> None:
    rng = np.random.default_rng(31)
    n, pc, pt = 4000, 0.10, 0.12
    hits = [
        (
            r := frequentist_test(
                ProportionStats(n, int(a)), ProportionStats(n, int(b)), relative=False
            )
        ).ci_low
        <= pt - pc
        <= r.ci_high
        for a, b in zip(rng.binomial(n, pc, SIMS), rng.binomial(n, pt, SIMS), strict=True)
    ]
    assert 0.93 <= _coverage(hits) <= 0.97


def test_primary_family_wise_error_of_the_decisions() -> None:
    """Null experiments, 3 treatment arms, 1 primary and 3 secondary metrics: the share of
    experiments where any arm ships stays <= alpha, and secondary metrics never change it."""
    import sys
    from pathlib import Path

    udfs = str(Path(__file__).resolve().parents[1] / "udfs")
    if udfs not in sys.path:
        sys.path.insert(0, udfs)
    from _experiment_design import ExperimentVars, experiment_config
    from experiment_results import analyse

    arms = ["control", "a", "b", "c"]
    metrics = [{"name": "m0", "type": "proportion", "role": "primary", "event": "open"}]
    metrics += [
        {"name": f"s{i}", "type": "proportion", "role": "secondary", "event": "click"}
        for i in range(3)
    ]
    raw = {"arms": [{"name": a, "weight": 1} for a in arms], "metrics": metrics}
    config = experiment_config(ExperimentVars.model_validate(raw))
    primary_only = experiment_config(ExperimentVars.model_validate({**raw, "metrics": metrics[:1]}))
    rng = np.random.default_rng(12)
    sims, n, p = 600, 2000, 0.1
    shipped = 0
    for sim in range(sims):
        counts = rng.binomial(n, p, (len(metrics), len(arms)))
        rows = [
            {
                "experiment_id": "e",
                "metric": m["name"],
                "segment_id": s,
                "arm": arm,
                "n": n,
                "sum": float(k),
                "sum_squares": float(k),
            }
            for m, ks in zip(metrics, counts, strict=True)
            for arm, k in zip(arms, ks, strict=True)
            for s in (None,)  # overall only: the segment level then has nothing to test
        ]
        sizes = [("e", arm, "all", n) for arm in arms]
        decided = [r for r in analyse(rows, sizes, config) if r["segment_id"] is None]
        primary = [r["decision"] for r in decided if r["metric_role"] == "primary"]
        if sim < 100:  # listing secondary metrics never changes a primary decision
            alone = analyse(rows, sizes, primary_only)
            assert primary == [r["decision"] for r in alone if r["segment_id"] is None]
        shipped += "ship" in primary
    se = math.sqrt(0.05 * 0.95 / sims)
    assert shipped / sims <= 0.05 + 2 * se

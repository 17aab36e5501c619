"""Benchmark cpo.experiments.stats: sufficient statistics for 1,000,000 assignments × 5 metrics,
then tests.

Prints one JSON line: the time to aggregate per-arm sufficient statistics with numpy (what the
SQL aggregates do in the pipeline) and the time to compute every result (frequentist, sequential,
Bayesian, SRM and Holm) from them.

Usage (from the repo root, with cpo importable, e.g. after ``pip install -e .``):
    PYTHONPATH=. python benchmarks/bench_stats.py [--assignments N] [--arms K]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cpo.experiments.stats import (
    MeanStats,
    ProportionStats,
    RatioStats,
    adjust_pvalues,
    bayesian_test,
    frequentist_test,
    srm_pvalue,
)

METRICS = ("delivered", "open_rate", "conversion", "revenue", "clicks_per_open")


def _simulate(n: int, arms: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arm = rng.integers(0, arms, n)
    opens = rng.poisson(1.5 + 0.05 * arm)
    clicks = rng.binomial(opens, 0.2)
    conversion = rng.random(n) < 0.03 + 0.002 * arm
    return {
        "arm": arm,
        "delivered": (rng.random(n) < 0.98).astype(float),
        "opened": (opens > 0).astype(float),
        "opens": opens.astype(float),
        "clicks": clicks.astype(float),
        "conversion": conversion.astype(float),
        "revenue": np.where(conversion, rng.gamma(2.0, 30.0, n), 0.0),
    }


def _aggregate(data: dict[str, np.ndarray], arms: int) -> dict[str, list]:
    arm = data["arm"]

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(arm, weights=values, minlength=arms)

    n = np.bincount(arm, minlength=arms)
    out: dict[str, list] = {}
    for name, column in (("delivered", "delivered"), ("open_rate", "opened")):
        out[name] = [ProportionStats(int(n[k]), int(s)) for k, s in enumerate(total(data[column]))]
    out["conversion"] = [
        ProportionStats(int(n[k]), int(s)) for k, s in enumerate(total(data["conversion"]))
    ]
    rev = data["revenue"]
    out["revenue"] = [
        MeanStats(int(n[k]), float(s), float(q))
        for k, (s, q) in enumerate(zip(total(rev), total(rev * rev), strict=True))
    ]
    num, den = data["clicks"], data["opens"]
    sums = zip(
        total(num), total(num * num), total(den), total(den * den), total(num * den), strict=True
    )
    out["clicks_per_open"] = [RatioStats(int(n[k]), *map(float, s)) for k, s in enumerate(sums)]
    return out


def _results(stats: dict[str, list], arms: int) -> int:
    rows = 0
    srm_pvalue([s.n for s in stats["conversion"]], [1.0] * arms)
    for metric in METRICS:
        control, treatments = stats[metric][0], stats[metric][1:]
        fixed = [frequentist_test(control, t) for t in treatments]
        for t in treatments:
            frequentist_test(control, t, sequential=True)
            bayesian_test(control, t)
        adjust_pvalues([r.p_value for r in fixed], "holm")
        rows += len(treatments)
    return rows


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assignments", type=int, default=1_000_000)
    parser.add_argument("--arms", type=int, default=4)
    args = parser.parse_args()
    data = _simulate(args.assignments, args.arms, np.random.default_rng(0))
    start = time.perf_counter()
    stats = _aggregate(data, args.arms)
    aggregated = time.perf_counter()
    rows = _results(stats, args.arms)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "benchmark": "stats",
                "assignments": args.assignments,
                "arms": args.arms,
                "metrics": len(METRICS),
                "comparisons": rows,
                "aggregate_s": round(aggregated - start, 4),
                "results_s": round(done - aggregated, 4),
                "ms_per_comparison": round(1000 * (done - aggregated) / rows, 3),
            }
        )
    )


if __name__ == "__main__":
    main()

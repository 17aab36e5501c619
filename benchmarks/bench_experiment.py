"""Benchmark the experiment analysis: 1,000,000 assignments, six metrics, every segment.

Builds a scratch project (in a temporary directory) holding the repository's experiment models
and steps, plus two generator steps for ``assignments`` (four arms, eight segments) and
``stg_customers`` (the CUPED covariates). The simulation produces the events. Prints one JSON
line with the time of each node; the figure of merit is ``analysis_s``, the time of
``experiment_metrics`` + ``experiment_results`` (target: at most 5 s).

Usage (from the repo root):
    PYTHONPATH=. python benchmarks/bench_experiment.py [--customers N] [--segments K]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from cpo.engine.project import Project
from cpo.engine.settings import register_vars_section

REPO = Path(__file__).resolve().parents[1]
STEPS = (
    "_experiment_design.py",
    "observed_events.py",
    "simulated_events.py",
    "experiment_results.py",
    "_experiment_files.py",
    "observed_outcomes.py",
    "external_assignments.py",
)

ASSIGNMENTS_STEP = """
import numpy as np
import pyarrow as pa


def model(ctx):
    n, k = ctx.var("bench.customers"), ctx.var("bench.segments")
    rng = np.random.default_rng(1)
    arms = np.array(["control", "urgent", "informational", "friendly"])
    ids = pa.array(np.char.add("C", np.char.zfill(np.arange(n).astype(str), 7)))
    arm = arms[rng.integers(0, 4, n)]
    segment = np.char.add("segment_", rng.integers(0, k, n).astype(str))
    at = np.datetime64("2026-11-20T09:00:00", "us") + rng.integers(0, 3_600_000_000, n)
    return pa.table({"experiment_id": pa.array(np.full(n, "tone_test_2026_11")),
                     "customer_id": ids, "arm": pa.array(arm),
                     "variant_id": pa.array(np.char.add(segment, arm)),
                     "segment_id": pa.array(segment), "assigned_at": pa.array(at)})
"""

CUSTOMERS_STEP = """
import numpy as np
import pyarrow as pa


def model(ctx):
    n = ctx.var("bench.customers")
    rng = np.random.default_rng(2)
    open_rate = rng.beta(2, 7, n)
    return pa.table({
        "customer_id": pa.array(np.char.add("C", np.char.zfill(np.arange(n).astype(str), 7))),
        "open_rate": open_rate, "click_rate": open_rate * rng.beta(2, 8, n),
        "purchase_frequency": rng.gamma(2, 2, n), "avg_order_value": rng.gamma(3, 25, n)})
"""


# Used for settings the project's cpo.yml does not declare (yet).
DEFAULT_EXPERIMENT = {
    "metrics": [
        {
            "name": "open_rate",
            "type": "proportion",
            "role": "primary",
            "event": "open",
            "covariate": "open_rate",
            "baseline": 0.2,
            "mde": 0.1,
        },
        {
            "name": "click_rate",
            "type": "proportion",
            "role": "secondary",
            "event": "click",
            "covariate": "click_rate",
            "baseline": 0.05,
            "mde": 0.15,
        },
        {
            "name": "clicks_per_open",
            "type": "ratio",
            "role": "secondary",
            "numerator": "click",
            "denominator": "open",
        },
        {
            "name": "conversion_rate",
            "type": "proportion",
            "role": "secondary",
            "event": "conversion",
        },
        {
            "name": "revenue_per_customer",
            "type": "mean",
            "role": "secondary",
            "event": "conversion",
            "value": "revenue",
        },
        {
            "name": "unsubscribe_rate",
            "type": "proportion",
            "role": "guardrail",
            "event": "unsubscribe",
            "direction": "decrease",
        },
    ],
    "simulation": {
        "seed": 2026,
        "covariate": "open_rate",
        "covariate_strength": 0.8,
        "rates": {
            "urgent": {"open": 0.264, "unsubscribe": 0.006},
            "friendly": {"open": 0.231, "click": 0.27},
        },
    },
}


def experiment_vars() -> dict:
    """The experiment block of the project's cpo.yml, completed with `DEFAULT_EXPERIMENT`."""
    project = yaml.safe_load((REPO / "cpo.yml").read_text(encoding="utf-8")) or {}
    block = (project.get("vars") or {}).get("experiment") or {}
    return {**DEFAULT_EXPERIMENT, **block}


def scratch_project(root: Path, customers: int, segments: int) -> None:
    (root / "udfs").mkdir(parents=True)
    shutil.copytree(REPO / "models" / "experiment", root / "models" / "experiment")
    for name in STEPS:
        shutil.copy(REPO / "udfs" / name, root / "udfs" / name)
    (root / "udfs" / "assignments.py").write_text(ASSIGNMENTS_STEP, encoding="utf-8")
    (root / "udfs" / "stg_customers.py").write_text(CUSTOMERS_STEP, encoding="utf-8")
    experiment = experiment_vars()
    experiment["simulation"] = {**experiment.get("simulation", {}), "enabled": True}
    config = {
        "name": "bench_experiment",
        "target": "dev",
        "targets": {"dev": {"database": "bench.duckdb"}},
        "vars": {
            "bench": {"customers": customers, "segments": segments},
            "generation": {"tones": ["urgent", "informational", "friendly"]},
            "experiment": experiment,
        },
    }
    (root / "cpo.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def main() -> None:
    # vars.bench sizes the generator steps; every vars section needs a schema.
    register_vars_section("bench", dict[str, int])
    # scipy is imported on first use (cpo.experiments.stats): import it before the clock starts
    # so that analysis_s measures the analysis, not a one-off import of about a second.
    import scipy.optimize
    import scipy.special
    import scipy.stats  # noqa: F401

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--segments", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        scratch_project(root, args.customers, args.segments)
        started = time.perf_counter()
        result = Project.load(root).build()
        total = time.perf_counter() - started
        failed = [(r.name, r.message) for r in result.results if r.failed]
        if failed:
            raise SystemExit(f"build failed: {failed}")
        seconds = {r.name: round(r.seconds, 3) for r in result.results}
        rows = {r.name: r.rows for r in result.results}
    analysis = seconds["experiment_metrics"] + seconds["experiment_results"]
    print(
        json.dumps(
            {
                "benchmark": "experiment_analysis",
                "customers": args.customers,
                "segments": args.segments,
                "metrics": len(experiment_vars()["metrics"]),
                "events": rows["stg_events"],
                "result_rows": rows["experiment_results"],
                "analysis_s": round(analysis, 3),
                "target_s": 5.0,
                "node_s": seconds,
                "build_s": round(total, 3),
            }
        )
    )


if __name__ == "__main__":
    main()

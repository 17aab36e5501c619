"""Benchmark the full offline build on N synthetic customers; print one JSON line.

    python benchmarks/run.py --customers 1000000
    python benchmarks/run.py --customers 10000000 --minimal

--minimal: a Parquet file with only customer_id, recency_days, frequency and monetary (made by
DuckDB, nothing per customer through Python), mapped in sources.customers; no name tags, rules
without tenure, the experiment's CUPED covariate on monetary. Peak memory is the process's
maximum RSS; DuckDB's share is capped by the target's memory_limit (1536MB with --minimal, what
a 3 GB machine should set; the sample's cpo.yml sets 2GB; --memory-limit sets another).

Generates N customers (benchmarks/synth.py) into a scratch copy of the sample project, runs
`build` with the offline providers, and reports total and per-node seconds, peak memory and
provider calls. The scratch folder is deleted afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synth import write_customers  # noqa: E402

from cpo.engine.project import Project  # noqa: E402
from tests.sample import copy_sample_project  # noqa: E402


def run(
    customers: int,
    *,
    keep: bool = False,
    select: list[str] | None = None,
    minimal: bool = False,
    memory_limit: str | None = None,
    memory_by_node: bool = False,
) -> dict:
    """Build the sample project with `customers` synthetic customers; return the figures."""
    scratch = Path(tempfile.mkdtemp(prefix="cpo-bench-"))
    sampler = RssSampler() if memory_by_node else None
    try:
        project_dir = copy_sample_project(scratch / "project")
        started = time.perf_counter()
        if minimal:
            write_minimal(project_dir / "data" / "customers.parquet", customers)
        else:
            write_customers(project_dir / "seeds" / "customers.csv", customers)
        configure(project_dir, minimal=minimal, memory_limit=memory_limit)
        generate_s = time.perf_counter() - started
        project = Project.load(project_dir)
        if sampler:
            sampler.start()
        result = project.build(select=select)
        if sampler:
            sampler.stop()
        calls = project_calls(project_dir, result.invocation_id)
        failed = [r.name for r in result.results if r.failed]
        return {
            "customers": customers,
            "minimal": minimal,
            "select": select,
            "success": result.success,
            "failed": failed,
            "seconds_total": round(result.seconds, 3),
            "seconds_generate_seed": round(generate_s, 3),
            "seconds_by_node": {
                r.name: round(r.seconds, 3)
                for r in result.results
                if r.resource_type != "test" and r.seconds >= 0.005
            },
            "seconds_tests": round(
                sum(r.seconds for r in result.results if r.resource_type == "test"), 3
            ),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "provider_calls": calls,
            **({"peak_rss_mb_by_node": sampler.by_node()} if sampler else {}),
        }
    finally:
        if keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


class RssSampler:
    """The process's resident memory sampled every 50 ms, attributed to the running node."""

    def __init__(self) -> None:
        import threading

        self.peaks: dict[str, float] = {}
        self.current = "(setup)"
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        from cpo.engine.execute import Runner

        original = Runner._traced
        sampler = self

        def traced(runner: Runner, node: Any, run: Any) -> Any:
            sampler.current = node.name
            try:
                return original(runner, node, run)
            finally:
                sampler.current = "(between nodes)"

        Runner._traced = traced  # type: ignore[method-assign]  # benchmark instrumentation
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._done.wait(0.05):
            with open("/proc/self/status", encoding="ascii") as status:
                kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
            node = self.current
            self.peaks[node] = max(self.peaks.get(node, 0.0), kib / 1024)

    def by_node(self) -> dict[str, float]:
        """Peak MiB per node, largest first (nodes under 1 MiB of samples are left out)."""
        ranked = sorted(self.peaks.items(), key=lambda kv: -kv[1])
        return {name: round(mib, 1) for name, mib in ranked}


def write_minimal(path: Path, customers: int) -> None:
    """customer_id, recency_days, frequency, monetary as Parquet, generated inside DuckDB."""
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(
        f"""copy (
            select 'C' || lpad(i::varchar, 8, '0') as customer_id,
                (hash(i, 1) % 720)::integer as recency_days,
                round(0.3 + (hash(i, 2) % 400) / 10.0, 1) as frequency,
                round((hash(i, 3) % 500000) / 100.0, 2) as monetary
            from range({int(customers)}) as t(i)
        ) to '{path}' (format parquet)"""
    )
    con.close()


MINIMAL_MEMORY_LIMIT = "1536MB"


def configure(project_dir: Path, *, minimal: bool, memory_limit: str | None) -> None:
    """Point sources.customers at the generated file; don't load the customers seed twice."""
    import yaml

    path = project_dir / "cpo.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["seeds"] = {"customers": {"enabled": False}}
    target = config["targets"][config["target"]]
    if memory_limit:
        target["memory_limit"] = memory_limit
    elif minimal:
        # What a user with a 3 GB machine would write (README, "Large files: memory"): DuckDB's
        # share; the process takes about 0.9 GB more (interpreter, libraries, steps, and
        # DuckDB's own allocations outside its buffer pool).
        target["memory_limit"] = MINIMAL_MEMORY_LIMIT
    if minimal:
        config["sources"]["customers"] = {
            "path": "data/customers.parquet",
            "columns": {c: c for c in ("customer_id", "recency_days", "frequency", "monetary")},
        }
        variables = config["vars"]
        variables["segmentation"]["rules"] = [
            r for r in variables["segmentation"]["rules"] if "tenure_days" not in r["when"]
        ]
        variables["messages"]["merge_tags"] = {
            k: v for k, v in variables["messages"]["merge_tags"].items() if k == "unsubscribe_url"
        }
        experiment = variables["experiment"]
        experiment["simulation"]["covariate"] = "monetary"
        for metric in experiment["metrics"]:
            if metric.get("covariate"):
                metric["covariate"] = "monetary"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def project_calls(project_dir: Path, run_id: str) -> dict:
    """Provider calls of one build, from its ledger: total, uncached, by step."""
    from cpo.adapters.duckdb import Database

    db = Database(project_dir / "cpo.duckdb", read_only=True)
    try:
        _, rows = db.fetch(
            "select step, count(*), count(*) filter (where not cache_hit) from llm_calls "
            "where run_id = ? group by step order by step",
            [run_id],
        )
    finally:
        db.close()
    return {
        "total": sum(r[1] for r in rows),
        "uncached": sum(r[2] for r in rows),
        "by_step": {r[0]: r[1] for r in rows},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    parser.add_argument("--select", nargs="+", help="build only these nodes (selection grammar)")
    parser.add_argument(
        "--minimal",
        action="store_true",
        help="Parquet with only customer_id, recency_days, frequency, monetary",
    )
    parser.add_argument(
        "--memory-by-node",
        action="store_true",
        help="sample resident memory every 50 ms and report the peak per node (Linux)",
    )
    parser.add_argument("--memory-limit", help="the target's memory_limit for the build, e.g. 2GB")
    parser.add_argument(
        "--target",
        choices=["duckdb", "spark"],
        default="duckdb",
        help="spark: Spark local[2] next to DuckDB, each in a child process (run_spark.py; "
        "its options, e.g. --driver-memory 12g, follow)",
    )
    args, rest = parser.parse_known_args()
    if args.target == "spark":
        import run_spark

        run_spark.main(
            [f"--customers={args.customers}", *(["--minimal"] * args.minimal), *rest]
            + (["--keep"] if args.keep else [])
        )
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    figures = run(
        args.customers,
        keep=args.keep,
        select=args.select,
        minimal=args.minimal,
        memory_limit=args.memory_limit,
        memory_by_node=args.memory_by_node,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

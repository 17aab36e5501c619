"""Benchmark the offline build on the Spark target (local[N]) next to DuckDB; print one JSON line.

    python benchmarks/run_spark.py --customers 1000000 [--engines spark duckdb] [--master local[2]]

Generates N customers (benchmarks/synth.py) into a scratch copy of the sample project and
builds it on each engine: seconds, peak memory of this process (the driver's Python side and
DuckDB) and of the Spark JVM (driver and executors share one JVM in local mode), from
/proc/<pid>/status VmHWM.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from synth import write_customers  # noqa: E402

from cpo.engine.project import Project  # noqa: E402
from tests.sample import copy_sample_project  # noqa: E402


def _jvm_peak_mb() -> float | None:
    """Peak resident memory of the Spark JVM children of this process (VmHWM), in MB."""
    try:
        pids = subprocess.run(
            ["pgrep", "-P", str(__import__("os").getpid()), "java"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
    except FileNotFoundError:
        return None
    peak = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return round(peak, 1) if pids else None


def _set_master(project_dir: Path, master: str, memory: str) -> None:
    config = project_dir / "cpo.yml"
    text = config.read_text(encoding="utf-8")
    text = text.replace(
        "    master: local[2]\n",
        f"    master: {master}\n    conf: {{spark.driver.memory: {memory}}}\n",
    )
    config.write_text(text, encoding="utf-8")


def run(customers: int, engines: list[str], master: str, memory: str, keep: bool) -> dict:
    """Build the sample with `customers` synthetic customers on each engine; return figures."""
    scratch = Path(tempfile.mkdtemp(prefix="cpo-bench-spark-"))
    figures: dict = {"customers": customers, "master": master}
    try:
        project_dir = copy_sample_project(scratch / "project")
        write_customers(project_dir / "seeds" / "customers.csv", customers)
        _set_master(project_dir, master, memory)
        for engine in engines:
            target = "spark" if engine == "spark" else None
            started = time.perf_counter()
            result = Project.load(project_dir, target=target).build()
            seconds = time.perf_counter() - started
            figures[engine] = {
                "seconds": round(seconds, 1),
                "success": result.success,
                "failed": [r.name for r in result.results if r.failed][:5],
                "python_peak_mb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
            }
            if engine == "spark":
                figures[engine]["jvm_peak_mb"] = _jvm_peak_mb()
        return figures
    finally:
        if keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--engines", nargs="+", default=["spark", "duckdb"])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    args = parser.parse_args()
    print(json.dumps(run(args.customers, args.engines, args.master, args.driver_memory, args.keep)))


if __name__ == "__main__":
    main()

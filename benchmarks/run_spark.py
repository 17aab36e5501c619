"""Benchmark the offline build on the Spark target (local[N]) next to DuckDB; print one JSON line.

    python benchmarks/run_spark.py --customers 1000000
    python benchmarks/run_spark.py --customers 10000000 --minimal --driver-memory 12g
    python benchmarks/run.py --target spark --customers 1000000     # the same, from run.py

Generates N customers once (benchmarks/synth.py, or with --minimal the four-column Parquet of
benchmarks/run.py) into a scratch copy of the sample project, then builds it on each engine in
a child process of its own, so each engine's figures are its own:

* ``seconds``: the build, as the child measured it (Spark's includes starting the session);
* ``python_peak_mb``: the child Python process's peak RSS (the driver's Python side; DuckDB
  runs inside it);
* ``jvm_peak_mb``: the Spark JVM's peak RSS (VmHWM; in local mode one JVM is the driver and
  the executors);
* ``tree_peak_mb``: the peak of the summed RSS of the child and all its descendants (JVM and
  the Python workers that run SQL functions), sampled every 0.2 s: what the machine needed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def _rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return 0.0


def _jvm_peak_mb() -> float | None:
    """Peak RSS (VmHWM) of the Java processes below this one, in MB."""
    peak, seen = 0.0, False
    for pid in _descendants(os.getpid())[1:]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "\nName:\tjava" not in "\n" + status:
            continue
        seen = True
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return round(peak, 1) if seen else None


def prepare(project_dir: Path, customers: int, *, minimal: bool, master: str, memory: str) -> None:
    """Write the customers and point the spark target at `master` with `memory` for the driver."""
    import yaml
    from run import configure, write_minimal
    from synth import write_customers

    from tests.sample import copy_sample_project

    copy_sample_project(project_dir)
    if minimal:
        write_minimal(project_dir / "data" / "customers.parquet", customers)
    else:
        write_customers(project_dir / "seeds" / "customers.csv", customers)
    configure(project_dir, minimal=minimal, memory_limit=None)
    path = project_dir / "cpo.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    spark = config["targets"]["spark"]
    spark["master"] = master
    spark["conf"] = {**(spark.get("conf") or {}), "spark.driver.memory": memory}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def build_one(project_dir: Path, engine: str) -> dict:
    """Build the prepared project on one engine, in this process; return its figures."""
    from cpo.engine.project import Project

    started = time.perf_counter()
    result = Project.load(project_dir, target="spark" if engine == "spark" else None).build()
    figures = {
        "seconds": round(time.perf_counter() - started, 1),
        "success": result.success,
        "failed": [f"{r.name}: {str(r.message)[:300]}" for r in result.results if r.failed][:5],
        "python_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if engine == "spark":
        figures["jvm_peak_mb"] = _jvm_peak_mb()
    return figures


def _measured(command: list[str]) -> tuple[dict, float]:
    """Run a child, sampling the summed RSS of its process tree; (its JSON, peak MB)."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_rss_mb(p) for p in _descendants(child.pid)))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    done.set()
    sampler.join()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {"success": False, "failed": [f"exit code {child.returncode}"]}, peak
    return json.loads(lines[-1]), peak


def run(
    customers: int,
    engines: list[str],
    master: str = "local[2]",
    memory: str = "4g",
    keep: bool = False,
    minimal: bool = False,
) -> dict:
    """Build `customers` synthetic customers on each engine (a child process each)."""
    scratch = Path(tempfile.mkdtemp(prefix="cpo-bench-spark-"))
    figures: dict = {"customers": customers, "minimal": minimal, "master": master}
    figures["driver_memory"] = memory
    try:
        project_dir = scratch / "project"
        started = time.perf_counter()
        prepare(project_dir, customers, minimal=minimal, master=master, memory=memory)
        figures["seconds_generate"] = round(time.perf_counter() - started, 1)
        for engine in engines:
            command = [sys.executable, __file__, "--build-one", engine, str(project_dir)]
            result, peak = _measured(command)
            figures[engine] = {**result, "tree_peak_mb": round(peak, 1)}
        return figures
    finally:
        if keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--engines", nargs="+", default=["spark", "duckdb"])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory (local mode)")
    parser.add_argument("--minimal", action="store_true", help="as benchmarks/run.py --minimal")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    parser.add_argument(
        "--build-one", nargs=2, metavar=("ENGINE", "PROJECT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.build_one:
        engine, project = args.build_one
        print(json.dumps(build_one(Path(project), engine)))
        return
    figures = run(
        args.customers, args.engines, args.master, args.driver_memory, args.keep, args.minimal
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

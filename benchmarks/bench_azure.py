"""Benchmark generation and screening against the Azure emulator under a request quota.

    python benchmarks/bench_azure.py [--segments 20] [--latency 0.3] [--rpm 600] [--concurrency 16]

Builds a scratch copy of the sample project with ``--target azure`` against the loopback
emulator (HTTPS, API keys) with `latency` seconds added to every Azure OpenAI and Content Safety
request, ``calls.requests_per_minute`` = `rpm`, and KMeans segmentation with `segments`
segments (x 3 tones + 1 control = the variants generated and screened). It prints one JSON line:
the calls the two steps made, their seconds, the seconds the quota allows for those calls
(calls / (rpm / 60)), the ratio of the two, and the number of failed items (the goal is a
ratio <= 1.25 with no failed item).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpo.engine.project import Project  # noqa: E402
from tests.emulator import Emulator  # noqa: E402
from tests.sample import copy_sample_project  # noqa: E402

STEPS = ("variants", "safety_screenings")
DEPLOYMENT = "bench-gpt"


def configure(project: Path, emu: Emulator, args: argparse.Namespace) -> None:
    """Point the azure target at the emulator and set the quota, concurrency and segments."""
    path = project / "cpo.yml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for settings in config["targets"]["azure"]["providers"].values():
        settings["ca_bundle"] = emu.ca_pem
    config["calls"].update(
        requests_per_minute=args.rpm, concurrency=args.concurrency, tokens_per_minute=0
    )
    config.setdefault("prices", {})[DEPLOYMENT] = {"input_per_1m": 0.15, "output_per_1m": 0.60}
    config["vars"]["segmentation"].update(method="kmeans", k_min=args.segments, k_max=args.segments)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def environment(emu: Emulator) -> dict[str, str]:
    keys = emu.keys
    return {
        "AZURE_OPENAI_ENDPOINT": emu.url,
        "AZURE_OPENAI_DEPLOYMENT_NAME": DEPLOYMENT,
        "AZURE_OPENAI_API_VERSION": "2024-10-21",
        "AZURE_OPENAI_API_KEY": keys.openai,
        "AZURE_SEARCH_ENDPOINT": emu.url,
        "AZURE_SEARCH_INDEX_NAME": "cpo-bench",
        "AZURE_SEARCH_ADMIN_KEY": keys.search_admin,
        "AZURE_SEARCH_QUERY_KEY": keys.search_query,
        "AZURE_CONTENT_SAFETY_ENDPOINT": emu.url,
        "AZURE_CONTENT_SAFETY_API_KEY": keys.safety,
    }


def figures(project: Path, run_id: str) -> dict[str, int]:
    """Variants, paid attempts and failed items of the two steps, from the built tables."""
    con = duckdb.connect(str(project / "cpo.duckdb"), read_only=True)
    try:

        def one(sql: str) -> int:
            return int(con.execute(sql, [run_id]).fetchone()[0] or 0)

        steps = "step in ('variants', 'safety_screenings')"
        return {
            "variants": one("select count(*) from variants where ? is not null"),
            "approved": one("select count(*) from approved_variants where ? is not null"),
            "calls": one(
                f"select sum(attempts) from llm_calls where run_id = ? and {steps} "
                "and not cache_hit"
            ),
            "cache_hits": one(
                f"select count(*) from llm_calls where run_id = ? and {steps} and cache_hit"
            ),
            "failed": one(
                "select (select count(*) from variants where status <> 'generated') "
                "+ (select count(*) from run_errors) "
                "+ (select count(*) from safety_screenings where \"check\" = 'harm:unscreened') "
                "+ (select count(*) from llm_calls where run_id = ? and status <> 'success')"
            ),
        }
    finally:
        con.close()


def run(args: argparse.Namespace) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="cpo-bench-azure-"))
    try:
        project = copy_sample_project(scratch / "project")
        with Emulator(tls=True) as emu:
            configure(project, emu, args)
            emu.set_faults(service=["openai", "safety"], latency_s=args.latency)
            started = time.perf_counter()
            result = Project.load(project, target="azure", env=environment(emu)).build()
            total = time.perf_counter() - started
            requests = len([r for r in emu.requests if r.service in ("openai", "safety")])
        if not result.success:
            failed = [(r.name, r.message[:300]) for r in result.results if r.failed]
            return {"success": False, "failed_nodes": failed}
        numbers = figures(project, result.invocation_id)
        seconds = sum(r.seconds for r in result.results if r.name in STEPS)
        quota_seconds = numbers["calls"] / (args.rpm / 60.0)
        return {
            "success": True,
            "segments": args.segments,
            "latency_s": args.latency,
            "requests_per_minute": args.rpm,
            "concurrency": args.concurrency,
            **numbers,
            "emulator_requests": requests,
            "seconds": round(seconds, 3),
            "quota_seconds": round(quota_seconds, 3),
            "ratio": round(seconds / quota_seconds, 3) if quota_seconds else None,
            "build_seconds": round(total, 3),
        }
    finally:
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=20, help="KMeans segments (x 3 tones)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds added per request")
    parser.add_argument("--rpm", type=float, default=600, help="calls.requests_per_minute")
    parser.add_argument("--concurrency", type=int, default=16, help="calls.concurrency")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()

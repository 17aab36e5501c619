"""The benchmarks still run: each at a small size, one JSON line with its figure of merit.

Their figures are quoted in the README; a benchmark that no longer runs (a settings schema that
moved on, a renamed step) would leave those figures unrepeatable. ``run.py`` is run by
``tests/test_scale.py``; ``bench_azure.py`` by hand (it builds through the emulator for minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _json_line(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bench_experiment_runs_and_reports_the_analysis_time() -> None:
    line = _json_line("bench_experiment.py", "--customers", "3000", "--segments", "3")
    assert line["benchmark"] == "experiment_analysis" and line["customers"] == 3000
    assert line["result_rows"] > 0 and line["events"] > 0
    assert 0 < line["analysis_s"] < line["build_s"]


@pytest.mark.slow
def test_bench_stats_runs_and_reports_the_time_per_comparison() -> None:
    line = _json_line("bench_stats.py", "--assignments", "20000")
    assert line["benchmark"] == "stats" and line["comparisons"] > 0
    assert line["ms_per_comparison"] > 0

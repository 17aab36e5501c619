"""Atomic builds: a failed or killed build leaves the database byte-identical, and analysts
reading the old file in another process are neither blocked nor broken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from conftest import file_hash

from cpo.engine.project import Project

REPO = Path(__file__).resolve().parents[1]
SLOW_STEP = '''"""A step that, when asked, says it started and then hangs (killed mid-build)."""

import os
import time
from pathlib import Path

import pandas as pd


def model(ctx):
    marker = os.environ.get("CPO_TEST_MARKER")
    if marker:
        Path(marker).write_text("started")
        time.sleep(60)
    return pd.DataFrame({"x": [1]})
'''
ANALYST = """
import sys

import duckdb

con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("select count(*) from people").fetchone()[0], flush=True)
sys.stdin.readline()  # the test builds while this connection stays open
print(con.execute("select count(*) from people").fetchone()[0], flush=True)
print(con.execute("select count(*) from adults").fetchone()[0], flush=True)
"""


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _count(database: Path, table: str) -> int:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(f"select count(*) from {table}").fetchone()[0]
    finally:
        con.close()


def test_failed_build_leaves_database_byte_identical(built_mini):
    database = built_mini / "mini.duckdb"
    before = file_hash(database)
    (built_mini / "models" / "marts" / "city_counts.sql").write_text("select 1/0::int as x from")
    run = Project.load(built_mini).build()
    assert not run.success and not run.committed
    # everything before the failure was built (in staging) and then thrown away
    assert {r.name: r.status for r in run.results}["adults"] == "success"
    assert file_hash(database) == before
    assert sorted(p.name for p in built_mini.iterdir() if "mini.duckdb" in p.name) == [
        "mini.duckdb"
    ]  # no staging file or WAL left behind


def test_kill_9_mid_build_leaves_database_and_next_build_cleans_up(built_mini, tmp_path):
    database = built_mini / "mini.duckdb"
    before = file_hash(database)
    (built_mini / "udfs" / "slow.py").write_text(SLOW_STEP)
    marker = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "runner.py", "build", "--project-dir", str(built_mini)],
        cwd=REPO,
        env={**os.environ, "CPO_TEST_MARKER": str(marker)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = built_mini / f".mini.duckdb.building-{process.pid}"
    try:
        _wait_for(marker)
        assert staging.exists()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)  # reap it, so its pid is really gone
    assert process.returncode == -signal.SIGKILL
    assert file_hash(database) == before
    assert staging.exists()  # what a killed build leaves behind...

    run = Project.load(built_mini).build()
    assert run.success and run.committed
    assert not staging.exists()  # ...the next build removes
    assert _count(database, "slow") == 1


def test_analyst_reading_in_another_process_is_not_blocked_or_broken(built_mini):
    database = built_mini / "mini.duckdb"
    analyst = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert analyst.stdout.readline().strip() == "5"
        with (built_mini / "seeds" / "people.csv").open("a", encoding="utf-8") as f:
            f.write("6,Fay,70,Oslo\n7,Gus,80,Lund\n")
        run = Project.load(built_mini).build()  # the analyst still holds the old file open
        assert run.success and run.committed
        out, err = analyst.communicate("go\n", timeout=30)
    finally:
        if analyst.poll() is None:
            analyst.kill()
            analyst.wait()
    assert analyst.returncode == 0, err
    assert out.split() == ["5", "3"]  # the old connection keeps reading the old data
    assert _count(database, "people") == 7  # a new connection sees the new build
    assert _count(database, "adults") == 5

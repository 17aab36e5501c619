"""Issue 10's regressions: what a careless user or a careful attacker tried, and what holds now.

Integrity (stale WAL, project lock, read-only `show`, protected outputs, kept file mode), CSV
injection in exports, personal data in test failures and seed errors, the per-project salt, a
read-only project folder, and empty inputs or selections.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import file_hash

from cpo.adapters.duckdb import Database, atomic_database
from cpo.engine.logs import SALT_FILE, hash_id
from cpo.engine.project import Project
from cpo.errors import CPOError

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from cpo.engine.cli import entrypoint; entrypoint()"]


def _count(database: Path, table: str) -> int:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute(f"select count(*) from {table}").fetchone()[0]
    finally:
        con.close()


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


WRITER = """
import sys

import duckdb

con = duckdb.connect(sys.argv[1])  # an analyst's read-write session
con.execute("delete from people where id > 1")
con.execute("delete from adults")
print("deleted", flush=True)
sys.stdin.readline()
"""


def _writer(database: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "deleted", process.stderr.read()
    return process


# -- 1. stale WAL -----------------------------------------------------------------------------


def test_a_crashed_sessions_wal_is_set_aside_not_replayed_onto_the_build(built_mini, cli):
    database = built_mini / "mini.duckdb"
    people, adults = _count(database, "people"), _count(database, "adults")
    writer = _writer(database)
    writer.send_signal(signal.SIGKILL)  # the session crashes: its WAL stays beside the file
    writer.wait(timeout=30)
    wal = built_mini / "mini.duckdb.wal"
    assert wal.exists()
    assert _count(database, "people") == 1  # any client opening the file replays the deletes

    result = cli("build", "--project-dir", built_mini)

    assert result.code == 0, result.out + result.err
    assert not wal.exists()
    stale = list(built_mini.glob("mini.duckdb.wal.stale-*"))
    assert len(stale) == 1  # kept, not deleted: it is someone's work
    assert "Moved a stale mini.duckdb.wal" in result.err
    # the published database is exactly the one built: the deletes did not come back
    assert (_count(database, "people"), _count(database, "adults")) == (people, adults)
    con = duckdb.connect(str(database))  # even a read-write open replays nothing
    try:
        assert con.execute("select count(*) from people").fetchone()[0] == people
    finally:
        con.close()
    log = (built_mini / "logs" / "cpo.log").read_text(encoding="utf-8")
    assert any(
        json.loads(line)["level"] == "warning" and "stale" in json.loads(line)["event"]
        for line in log.splitlines()
    )


def test_build_refuses_while_another_process_writes_the_database(built_mini, cli):
    database = built_mini / "mini.duckdb"
    writer = _writer(database)
    try:
        before = file_hash(database)
        result = cli("build", "--project-dir", built_mini)
        assert result.code == 1
        assert f"mini.duckdb is open for writing by another process (pid {writer.pid})" in (
            result.err
        )
        assert "connect with read_only=True" in result.err
        assert file_hash(database) == before
        assert not list(built_mini.glob(".mini.duckdb.building-*"))
    finally:
        writer.kill()
        writer.wait(timeout=30)


def test_commit_checkpoints_the_staging_database(tmp_path):
    database = tmp_path / "db.duckdb"
    duckdb.connect(str(database)).execute("create table t as select 1 as x").close()
    with atomic_database(database) as (staging, commit):
        con = duckdb.connect(str(staging))
        con.execute("pragma disable_checkpoint_on_shutdown")
        con.execute("insert into t values (2), (3)")
        con.close()
        assert Path(f"{staging}.wal").exists()  # the rows live only in the staging WAL
        commit()
    assert not Path(f"{database}.wal").exists()
    assert _count(database, "t") == 3  # the WAL was folded in before the swap


# -- 2. project lock --------------------------------------------------------------------------

SLOW_STEP = """
import os
import time
from pathlib import Path

import pandas as pd


def model(ctx):
    Path(os.environ["CPO_TEST_MARKER"]).write_text("started")
    time.sleep(120)
    return pd.DataFrame({"x": [1]})
"""


def test_a_second_build_fails_at_once_while_one_runs(built_mini, tmp_path, cli):
    _write(built_mini, "udfs/slow.py", SLOW_STEP)
    marker = tmp_path / "started"
    first = subprocess.Popen(
        [*CLI, "build", "--project-dir", str(built_mini)],
        cwd=REPO,
        env={**os.environ, "CPO_TEST_MARKER": str(marker)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(marker)
        before = file_hash(built_mini / "mini.duckdb")
        started = time.monotonic()
        for command in ("build", "run", "seed", "clean"):
            result = cli(command, "--project-dir", built_mini)
            assert result.code == 1, command
            assert f"another build (pid {first.pid}, 'build') is running" in result.err
        assert time.monotonic() - started < 60  # failed at once, did not wait for the first
        assert file_hash(built_mini / "mini.duckdb") == before
        assert (built_mini / "target").exists()  # clean did not pull target/ from under it
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    (built_mini / "udfs" / "slow.py").unlink()
    assert cli("build", "--project-dir", built_mini).code == 0  # a dead holder frees the lock


# -- 3. show is read-only ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (  # the closing-parenthesis attack on the old "select * from (<query>) limit" wrapper
            "select 1) ; copy (select * from people) to '{out}' (format csv); select (1",
            "the query does not parse",
        ),
        ("select 1; copy (select * from people) to '{out}' (format csv)", "2 statements"),
        ("select 1; copy (select 42) to '{db}' (format csv)", "2 statements"),
        ("copy (select * from people) to '{out}' (format csv)", "this is a COPY statement"),
        ("copy people from '{out}'", "this is a COPY statement"),
        ("attach '{out}' as other", "this is a ATTACH statement"),
        ("set enable_external_access = true", "this is a SET statement"),
        ("pragma disable_checkpoint_on_shutdown", "this is a PRAGMA statement"),
        ("select * from read_csv('{seed}')", "file system operations are disabled"),
        ("select * from read_text('{seed}')", "file system operations are disabled"),
    ],
)
def test_show_inline_runs_one_read_only_query(built_mini, tmp_path, cli, query, expected):
    database = built_mini / "mini.duckdb"
    before = file_hash(database)
    out = tmp_path / "leak.csv"
    text = query.format(out=out, db=database, seed=built_mini / "seeds" / "people.csv")
    result = cli("show", "--project-dir", built_mini, "--inline", text)
    assert result.code == 1
    assert expected in result.err
    assert "Traceback" not in result.err
    assert not out.exists()
    assert file_hash(database) == before


def test_show_inline_still_takes_ordinary_queries(built_mini, cli):
    for query in (
        "select name from people order by id;",  # a habitual trailing semicolon
        "with p as (select * from people) select name from p order by id -- comment",
        "from people select name order by id",
    ):
        result = cli("show", "--project-dir", built_mini, "--inline", query, "--limit", "2")
        assert result.code == 0, result.err
        assert "Ann" in result.out and "Bob" in result.out and "Cid" not in result.out


# -- 4. outputs never overwrite the database or the inputs ------------------------------------


@pytest.mark.parametrize(
    ("command", "out", "what"),
    [
        ("report", "mini.duckdb", "the project's database"),
        ("report", "mini.duckdb.wal", "the project's database"),
        ("report", "cpo.yml", "a project input (cpo.yml)"),
        ("report", "seeds/people.csv", "a project input (seeds)"),
        ("report", "models/new.html", "a project input (models)"),
        ("report", "udfs/report.html", "a project input (udfs)"),
        ("report", ".cpo/salt", "a project input (.cpo)"),
        ("export", "seeds", "a project input (seeds)"),
        ("export", "models/marts", "a project input (models)"),
        ("export", "mini.duckdb", "the project's database"),
    ],
)
def test_outputs_refuse_the_database_and_project_inputs(built_mini, cli, command, out, what):
    inputs = [built_mini / "mini.duckdb", built_mini / "cpo.yml", *(built_mini / "seeds").iterdir()]
    sources = {p: file_hash(p) for p in inputs}
    result = cli(command, "--project-dir", built_mini, "--out", built_mini / out, "--force")
    assert result.code == 1
    assert f"would write onto {what}" in result.err
    assert {p: file_hash(p) for p in sources} == sources
    assert not (built_mini / "models" / "new.html").exists()


def test_export_into_a_foreign_non_empty_folder_needs_force(built_mini, tmp_path, cli):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = cli("export", "--project-dir", built_mini, "--out", folder, "--select", "people")
    assert result.code == 1
    assert "is a folder with other files in it" in result.err and "--force" in result.err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    forced = cli(
        "export", "--project-dir", built_mini, "--out", folder, "--select", "people", "--force"
    )
    assert forced.code == 0, forced.err
    assert (folder / "people.parquet").exists() and (folder / "notes.txt").exists()
    # an earlier export is the export's own folder: writing it again needs no --force
    again = cli("export", "--project-dir", built_mini, "--out", folder, "--select", "people")
    assert again.code == 0, again.err
    root = cli("export", "--project-dir", built_mini, "--out", built_mini)
    assert root.code == 1 and "is a folder with other files in it" in root.err


def test_report_replaces_only_html_files_without_force(built_mini, tmp_path, cli):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    result = cli("report", "--project-dir", built_mini, "--out", notes)
    assert result.code == 1 and "is not an HTML page" in result.err
    assert notes.read_text() == "my notes"
    page = tmp_path / "report.html"
    assert cli("report", "--project-dir", built_mini, "--out", page).code == 0
    assert cli("report", "--project-dir", built_mini, "--out", page).code == 0  # its own file
    assert cli("report", "--project-dir", built_mini, "--out", notes, "--force").code == 0


# -- 5. the database keeps its mode and owner -------------------------------------------------


def test_build_keeps_the_database_mode_and_owner(built_mini):
    database = built_mini / "mini.duckdb"
    database.chmod(0o600)
    owner = None
    if os.geteuid() == 0:  # only root may hand a file to someone else
        os.chown(database, 65534, 65534)
        owner = (65534, 65534)
    _write(built_mini, "seeds/people.csv", "id,name,age,city\n1,Ann,34,Oslo\n2,Bob,47,Lund\n")
    run = Project.load(built_mini).build()
    assert run.success and run.committed
    assert _count(database, "people") == 2  # a new file was swapped in...
    assert stat.S_IMODE(database.stat().st_mode) == 0o600  # ...with the old one's mode
    if owner:
        assert (database.stat().st_uid, database.stat().st_gid) == owner


# -- 9. CSV injection -------------------------------------------------------------------------

HOSTILE = ['=HYPERLINK("http://x","y")', "+1+2", "-3+4", "@SUM(A1)", "\tTab", "\rCR", "ok"]


def test_csv_export_neutralises_formulas_and_parquet_keeps_values(built_mini, tmp_path, cli):
    with (built_mini / "seeds" / "notes.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerows([("id", "body"), *enumerate(HOSTILE, 1)])
    assert cli("build", "--project-dir", built_mini).code == 0
    out = tmp_path / "csv"
    result = cli(
        "export", "--project-dir", built_mini, "--format", "csv", "--out", out, "-s", "notes"
    )
    assert result.code == 0, result.err
    with (out / "notes.csv").open(newline="", encoding="utf-8") as f:
        cells = [row["body"] for row in csv.DictReader(f)]
    assert cells == ["'" + v for v in HOSTILE[:-1]] + ["ok"]
    parquet = tmp_path / "parquet"
    assert cli("export", "--project-dir", built_mini, "--out", parquet, "-s", "notes").code == 0
    con = duckdb.connect()
    values = con.execute(
        f"select body from read_parquet('{parquet / 'notes.parquet'}') order by id"
    ).fetchall()
    assert [v for (v,) in values] == HOSTILE


# -- 10. no personal data in test failures or seed errors -------------------------------------

CUSTOMERS = """customer_id,first_name,email,tier
C-1001,Astrid,astrid.berg@example.com,gold
C-1002,Bjorn,bjorn.lie@example.com,
C-1002,Cecilie,cecilie.dahl@example.com,silver
C-1004,Dagny,dagny.moe@example.com,
"""
CUSTOMER_SCHEMA = """
  - name: customers
    columns:
      - name: customer_id
        tests: [unique]
      - name: first_name
        meta: {pii: true}
      - name: email
        meta: {pii: true}
      - name: tier
        tests:
          - not_null: {severity: warn}
"""
PERSONAL = ["Astrid", "Bjorn", "Cecilie", "Dagny", "example.com", "C-1001", "C-1002", "C-1004"]


def _with_customers(project: Path, text: str) -> None:
    _write(project, "seeds/customers.csv", text)
    schema = project / "seeds" / "schema.yml"
    schema.write_text(schema.read_text() + CUSTOMER_SCHEMA)
    # a singular test over the customers, selecting whole rows
    _write(
        project,
        "data_tests/no_silver.sql",
        "{{ config(severity='warn') }}\n"
        "select * from {{ ref('customers') }} where tier = 'silver'\n",
    )


def test_failing_tests_show_only_tested_columns_with_ids_and_pii_hashed(mini_project, cli):
    _with_customers(mini_project, CUSTOMERS)
    result = cli("build", "--project-dir", mini_project)
    assert result.code == 1
    results = (mini_project / "target" / "run_results.json").read_text(encoding="utf-8")
    for text in (result.out, result.err, results):
        leaked = [p for p in PERSONAL if p in text]
        assert not leaked, leaked
    messages = {r["name"]: r["message"] for r in json.loads(results)["results"]}
    # not_null shows the tested column (NULL), never the row's name and email
    assert messages["not_null_customers_tier"].startswith(
        '2 failing row(s) in "customers" (e.g. None, None)'
    )
    # a customer id is hashed with the project's salt, the digest hash_id and exports give
    digest = hash_id("C-1002", "CPO_LOG_SALT", mini_project)
    assert f"('#{digest}', 2)" in messages["unique_customers_customer_id"]
    # a singular test's whole rows: PII and ids hashed, declared non-PII columns as they are
    singular = messages["no_silver"]
    assert f"#{hash_id('Cecilie', 'CPO_LOG_SALT', mini_project)}" in singular
    assert "'silver'" in singular


def test_seed_errors_name_file_line_and_column_but_never_the_row(mini_project, cli):
    bad = CUSTOMERS.replace(
        "C-1004,Dagny,dagny.moe@example.com,", "C-1004,Dagny,dagny.moe@example.com,gold,extra"
    )
    _with_customers(mini_project, bad)
    result = cli("build", "--project-dir", mini_project)
    assert result.code == 1
    assert "seeds/customers.csv:5: cannot load seed 'customers'" in result.out
    assert "Found: 5 (column 5)" in result.out
    text = result.out + result.err + (mini_project / "target" / "run_results.json").read_text()
    assert "Original Line" not in text
    assert not [p for p in PERSONAL if p in text]


def test_unterminated_quote_and_bad_cast_do_not_echo_values(mini_project, cli):
    _write(mini_project, "seeds/people.csv", 'id,name,age,city\n1,Ann,34,Oslo\n2,"Bob,17,Lund\n')
    result = cli("build", "--project-dir", mini_project)
    assert result.code == 1 and "seeds/people.csv:3:" in result.out
    assert "unterminated quote" in result.out and "Bob" not in result.out
    _write(mini_project, "seeds/people.csv", "id,name,age,city\n1,Ann,34,Oslo\nx@y.no,B,1,Lund\n")
    result = cli("build", "--project-dir", mini_project)
    assert result.code == 1
    assert "seeds/people.csv:3: cannot load seed 'people': a value in column id" in result.out
    assert "x@y.no" not in result.out + result.err


# -- 11. a random per-project salt ------------------------------------------------------------


def test_without_a_salt_variable_a_random_project_salt_is_created_once(
    mini_project, tmp_path, cli, monkeypatch
):
    monkeypatch.delenv("CPO_LOG_SALT", raising=False)
    first = cli("build", "--project-dir", mini_project)
    assert first.code == 0, first.err
    assert first.err.count("Created a random hashing salt in .cpo/salt") == 1
    salt_file = mini_project / SALT_FILE
    salt = salt_file.read_text().strip()
    assert len(salt) == 64 and stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    public = hashlib.sha256(b"cpo-default-salt:42").hexdigest()[:16]
    assert hash_id(42, root=mini_project) == hashlib.sha256(f"{salt}:42".encode()).hexdigest()[:16]
    assert hash_id(42, root=mini_project) != public
    second = cli("build", "--project-dir", mini_project)
    assert second.code == 0 and "hashing salt" not in second.err  # said once
    assert salt_file.read_text().strip() == salt  # and kept
    # in a fresh process too: the same salt is read back, nothing is said
    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cpo.engine.logs import hash_id; import sys; print(hash_id(42, root=sys.argv[1]))",
            str(mini_project),
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "CPO_LOG_SALT"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert fresh.stdout.strip() == hash_id(42, root=mini_project)
    # exports hash with it and never carry it
    out = tmp_path / "export"
    assert cli("export", "--project-dir", mini_project, "--out", out, "--format", "csv").code == 0
    exported = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert salt not in exported and hash_id("Ann", root=mini_project) in exported
    # a salt variable wins over the file
    monkeypatch.setenv("CPO_LOG_SALT", "mine")
    assert hash_id(42, root=mini_project) == hashlib.sha256(b"mine:42").hexdigest()[:16]


# -- 14. a read-only project folder -----------------------------------------------------------


def _read_only_runner(project: Path):
    """Run the CLI on `project` mounted read-only; None when this machine cannot do that.

    chmod does not stop root, so as root the folder is bind-mounted read-only in a private
    mount namespace (``unshare -m``); as another user, the folder is chmod'ed read-only.
    """
    if os.geteuid() != 0:
        for path in [project, *project.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [*CLI, *args, "--project-dir", str(project)],
                cwd=REPO,
                capture_output=True,
                text=True,
            )

        return run
    unshare = shutil.which("unshare")
    mount = f"mount --bind {project} {project} && mount -o remount,bind,ro {project} {project}"
    if not unshare:
        return None
    probe = subprocess.run(
        [unshare, "-m", "sh", "-c", f"{mount} && ! touch {project}/.probe"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None

    def run(*args: str) -> subprocess.CompletedProcess:
        command = " ".join(f"'{a}'" for a in [*CLI, *args, "--project-dir", str(project)])
        return subprocess.run(
            [unshare, "-m", "sh", "-c", f"{mount} && exec {command}"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )

    return run


@pytest.mark.slow  # ten CLI processes in a read-only mount namespace
def test_a_read_only_project_gives_clear_errors_not_crashes(built_mini):
    shutil.rmtree(built_mini / ".cpo", ignore_errors=True)
    before = file_hash(built_mini / "mini.duckdb")
    run = _read_only_runner(built_mini)
    if run is None:
        pytest.skip("cannot make a folder read-only here (root without unshare/mount)")
    for command in ("build", "test", "plan", "compile", "docs", "export", "clean"):
        result = run(command)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr, command
        assert "Error:" in result.stderr
        assert "read-only file system" in result.stderr.lower() or "denied" in result.stderr
    logged = run("test")
    assert "logging to stderr" in logged.stderr  # logs fall back to stderr
    for command in (["ls"], ["show", "--inline", "select count(*) as n from people"]):
        result = run(*command)
        assert result.returncode == 0, (command, result.stderr)
    assert file_hash(built_mini / "mini.duckdb") == before


# -- 15. empty inputs and empty selections ----------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "text"),
    [
        ("seeds/people.csv", "id,name,age,city\n"),
        ("seeds/people.csv", "id,name,age,city\r\n\r\n"),
        ("seeds/visits.jsonl", ""),
        ("seeds/visits.jsonl", "\n"),
    ],
)
def test_an_empty_seed_is_an_error_not_an_empty_build(built_mini, cli, seed, text):
    database = built_mini / "mini.duckdb"
    before = file_hash(database)
    _write(built_mini, seed, text)
    result = cli("build", "--project-dir", built_mini)
    assert result.code == 1
    name = Path(seed).stem
    assert f"{seed}" in result.out and f"seed {name!r}" in result.out
    assert "Traceback" not in result.out + result.err
    assert file_hash(database) == before


@pytest.mark.parametrize(
    "args",
    [
        ["build", "--select", ""],
        ["build", "--select", " "],
        ["build", "--select", "people", "--exclude", "people"],
        ["run", "--select", "people"],  # a seed: nothing for 'run'
        ["seed", "--select", "adults"],  # a model: nothing for 'seed'
    ],
)
def test_a_selection_of_nothing_changes_nothing(built_mini, cli, args):
    database = built_mini / "mini.duckdb"
    before = file_hash(database)
    result = cli(*args, "--project-dir", built_mini)
    assert result.code == 1
    assert "selects nothing" in result.err and "mini.duckdb is unchanged" in result.err
    assert file_hash(database) == before


def test_database_helper_still_opens_read_only(built_mini):
    """`show`'s connection cannot write even through the Python API."""
    db = Database(built_mini / "mini.duckdb", read_only=True)
    try:
        with pytest.raises(CPOError):
            db.preview("delete from people", 10)
        assert db.preview("select count(*) from people", 10) == (["count_star()"], [(5,)])
    finally:
        db.close()

"""The CLI end to end (``cpo.engine.cli.main``): exit codes, exact messages, and bad input.

Every bad-input case must exit 1, say which file and line (or key) to fix, show no traceback,
and leave the database byte-identical to the last successful build.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import file_hash

MARTS = Path("models/marts")


def _write(root: Path, relative: str | Path, text: str) -> None:
    (root / relative).write_text(text, encoding="utf-8")


def _assert_failed_cleanly(result, root: Path, before: str) -> None:
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.out + result.err
    assert file_hash(root / "mini.duckdb") == before


def test_build_prints_each_node_and_a_summary(cli, mini_project):
    result = cli("build", "--project-dir", mini_project)
    assert result.code == 0, result.out
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "1",
        "OK",
        "seed",
        "people",
        "loaded",
        "seed",
        "people",
        "(5",
        "rows)",
        lines[0].split()[-1],
    ]
    assert any("WARN  test   not_null_people_age  1 failing row(s)" in line for line in lines)
    assert any("OK    model  stg_visits  created ephemeral stg_visits" in line for line in lines)
    assert any(
        "OK    python adult_stats  created table adult_stats (1 rows)" in line for line in lines
    )
    assert lines[-1].startswith("Done in ")
    assert lines[-1].endswith("11 pass, 8 success, 1 warn. Database: mini.duckdb")
    assert (mini_project / "mini.duckdb").is_file()


def test_seed_run_test_commands(cli, built_mini):
    root = str(built_mini)
    seed = cli("seed", "--project-dir", root)
    assert seed.code == 0
    assert "Done in" in seed.out and "2 success" in seed.out and "PASS" not in seed.out
    run = cli("run", "--project-dir", root)
    assert run.code == 0 and "6 success" in run.out and "test" not in run.out.split("Done")[0]
    test = cli("test", "--project-dir", root, "-s", "adults")
    assert test.code == 0
    assert "Done in" in test.out and "5 pass." in test.out


def test_show_a_model_and_an_inline_query(cli, built_mini):
    result = cli("show", "--project-dir", built_mini, "--select", "adults", "--limit", "1")
    assert result.code == 0
    assert "greeting" in result.out and "Hello, Ann" in result.out
    assert "Cid" not in result.out  # --limit 1
    inline = cli("show", "--project-dir", built_mini, "--inline", "select 1 as x")
    assert inline.code == 0
    assert "│ x │" in inline.out.replace("┃", "│") and "│ 1 │" in inline.out


def test_show_bad_query(cli, built_mini):
    result = cli("show", "--project-dir", built_mini, "--inline", "select nope")
    assert result.code == 1
    assert result.err.startswith("Error: query failed: Binder Error")


def test_clean_keeps_the_database(cli, built_mini):
    assert cli("build", "--project-dir", built_mini, "-s", "visits").code == 0
    assert (built_mini / "target").is_dir() and (built_mini / "logs").is_dir()
    result = cli("clean", "--project-dir", built_mini)
    assert result.code == 0
    assert "removed" in result.out
    assert not (built_mini / "target").exists() and not (built_mini / "logs").exists()
    assert (built_mini / "mini.duckdb").is_file()


def test_vars_change_results(cli, built_mini):
    result = cli("build", "--project-dir", built_mini, "-s", "adults", "--vars", '{"min_age": 30}')
    assert result.code == 0
    assert "created table adults (2 rows)" in result.out


def test_full_refresh_flag(cli, built_mini):
    _write(built_mini, "seeds/people.csv", "id,name,age,city\n1,Ann,34,Oslo\n")
    merged = cli("build", "--project-dir", built_mini, "-s", "+person_totals")
    assert "created table person_totals (5 rows)" in merged.out  # merged: old ids kept
    rebuilt = cli("build", "--project-dir", built_mini, "-s", "+person_totals", "--full-refresh")
    assert "created table person_totals (1 rows)" in rebuilt.out


def test_warn_severity_exits_0(cli, built_mini):
    result = cli("test", "--project-dir", built_mini, "-s", "people")
    assert result.code == 0
    assert "WARN  test   not_null_people_age  1 failing row(s)" in result.out
    assert "1 warn" in result.out


def test_failing_test_exits_1_and_keeps_database(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(built_mini, "seeds/people.csv", "id,name,age,city\n1,Ann,34,Oslo\n1,Bob,40,Lund\n")
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert "FAIL  test   unique_people_id  1 failing row(s)" in result.out
    assert "SKIP  model  adults  skipped: test unique_people_id failed" in result.out
    assert "mini.duckdb was left unchanged." in result.out


def test_fail_fast(cli, built_mini):
    _write(built_mini, "seeds/people.csv", "id,name,age,city\n1,Ann,34,Oslo\n1,Bob,40,Lund\n")
    result = cli("build", "--project-dir", built_mini, "--fail-fast")
    assert result.code == 1
    assert "SKIP  seed   visits  skipped: an earlier failure (--fail-fast)" in result.out


def test_run_results_written_by_cli(cli, built_mini):
    result = cli("build", "--project-dir", built_mini, "-s", "city_counts")
    assert result.code == 0
    payload = json.loads((built_mini / "target" / "run_results.json").read_text())
    assert len(payload["metadata"]["invocation_id"]) == 36
    assert [(r["name"], r["status"]) for r in payload["results"]] == [
        ("city_counts", "success"),
        ("unique_city_counts_city", "pass"),
    ]


# -- bad input -----------------------------------------------------------------------------


def test_malformed_csv_row(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(built_mini, "seeds/people.csv", "id,name,age,city\n1,Ann,34,Oslo\n2,Bob,17,Lund,x\n")
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert f"people: {Path('seeds/people.csv')}:3: cannot load seed 'people':" in result.out
    assert "Expected Number of Columns: 4 Found: 5" in result.out


def test_seed_missing_required_column(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(built_mini, "seeds/people.csv", "id,name,age\n1,Ann,34\n")
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert (
        f"{Path('seeds/people.csv')}:1: seed 'people' is missing required column(s) "
        "city; it has: id, name, age"
    ) in result.out


def test_unknown_ref(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(built_mini, MARTS / "city_counts.sql", "select 1\nfrom {{ ref('adultz') }}\n")
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert result.err == (
        f"Error: {MARTS / 'city_counts.sql'}:2: city_counts refers to 'adultz', which is not a "
        "model, seed or step of this project (or is disabled); did you mean 'adults'?\n"
    )


def test_dependency_cycle(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(
        built_mini,
        "models/staging/stg_people.sql",
        "select * from {{ ref('people') }} where id in (select 1 from {{ ref('adults') }})\n",
    )
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert "dependency cycle: " in result.err
    cycle = result.err.split("dependency cycle: ")[1].split(";")[0].split(" -> ")
    assert set(cycle) == {"adults", "stg_people"} and cycle[0] == cycle[-1]


def test_jinja_syntax_error(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(built_mini, MARTS / "city_counts.sql", "select 1\n{% if %}\n")
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert result.err.startswith(f"Error: {MARTS / 'city_counts.sql'}:2: Jinja syntax error: ")


def test_sql_error(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(built_mini, MARTS / "city_counts.sql", "select nope from {{ ref('adults') }}\n")
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert (
        f"city_counts: {MARTS / 'city_counts.sql'}: Binder Error: Referenced column "
        '"nope" not found'
    ) in result.out
    compiled = result.out.split("Binder Error")[1].split("compiled SQL: ")[1].splitlines()[0]
    assert (built_mini / compiled).read_text().startswith('select nope from "adults"')


def test_python_step_error(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(
        built_mini,
        "udfs/adult_stats.py",
        "def model(ctx):\n    ctx.ref('adults')\n    raise RuntimeError('no data today')\n",
    )
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert (
        f"ERROR python adult_stats  {Path('udfs/adult_stats.py')}:3: RuntimeError: no data today"
    ) in result.out


def test_python_step_syntax_error(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(built_mini, "udfs/adult_stats.py", "def model(ctx):\n    return (\n")
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert result.err.startswith(f"Error: {Path('udfs/adult_stats.py')}:2: Python syntax error")


def test_bad_schema_yml(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(
        built_mini,
        MARTS / "schema.yml",
        "models:\n  - name: adults\n    columns:\n      - name: id\n        tests: [uniq]\n",
    )
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert result.err.startswith(
        f"Error: {MARTS / 'schema.yml'}:5: models.0.columns.0.tests.0: unknown test 'uniq'"
    )


@pytest.mark.parametrize("command", ["build", "ls"])
def test_debug_shows_traceback(cli, built_mini, command):
    _write(built_mini, MARTS / "city_counts.sql", "select 1\n{% if %}\n")
    plain = cli(command, "--project-dir", built_mini)
    debug = cli(command, "--project-dir", built_mini, "--debug")
    assert plain.code == debug.code == 1
    assert "Traceback" not in plain.err
    assert "Traceback (most recent call last)" in debug.err
    assert "Jinja syntax error" in debug.err


def test_udfs_import_error_names_file_and_line(cli, built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _write(
        built_mini, "udfs/functions.py", "from cpo.engine.udf import sql_function\n\nx = 1 / 0\n"
    )
    result = cli("build", "--project-dir", built_mini)
    _assert_failed_cleanly(result, built_mini, before)
    assert result.err == (
        f"Error: {Path('udfs/functions.py')}:3: cannot import Python step: "
        "ZeroDivisionError: division by zero\n"
    )


def test_plugins_add_commands_but_never_replace_a_built_in_one(cli, mini_project):
    from cpo.engine.cli import build_parser
    from cpo.engine.plugins import CliCommand, hookimpl, plugin_manager

    def run(args, console):
        console.print(f"{args.command} from a plugin, loud={args.loud}")
        return 0

    class Plugin:
        @hookimpl
        def cpo_cli_commands(self):
            arguments = lambda parser: parser.add_argument("--loud", action="store_true")  # noqa: E731
            return [
                CliCommand("hello", "say hello", arguments, run),
                CliCommand("build", "no", arguments, run),
            ]

    manager = plugin_manager()
    manager.register(Plugin(), name="test-commands")
    try:
        assert "hello" in build_parser().format_help()
        result = cli("hello", "--loud")
        assert (result.code, result.out.strip()) == (0, "hello from a plugin, loud=True")
        assert cli("build", "--project-dir", mini_project).code == 0  # still the real build
    finally:
        manager.unregister(name="test-commands")
    # init is the personalisation domain's command, registered the same way.
    assert "init" in build_parser().format_help()
    with pytest.raises(SystemExit) as exited:  # gone with its plugin: a usage error
        cli("hello")
    assert exited.value.code == 2

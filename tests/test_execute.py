"""Executing the DAG through `Project`: order, materializations, tests, skips and artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from conftest import file_hash

from cpo.engine.project import Project
from tests.helpers import query_rows

MODELS_IN_ORDER = [
    "stg_people",
    "stg_visits",
    "adults",
    "person_totals",
    "adult_stats",
    "city_counts",
]


def _statuses(run) -> dict[str, str]:
    return {r.name: r.status for r in run.results}


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def test_build_runs_everything_in_dag_order(mini_project):
    run = Project.load(mini_project).build()
    assert run.success and run.committed
    names = [r.name for r in run.results]
    for name in ("unique_people_id", "stg_people", "adults", "unique_adults_id", "city_counts"):
        assert name in names
    # each parent before its child, each node's tests right after it and before its children
    assert names.index("people") < names.index("unique_people_id") < names.index("stg_people")
    assert names.index("adults") < names.index("unique_adults_id") < names.index("city_counts")
    assert names.index("adults") < names.index("adult_stats")
    statuses = _statuses(run)
    assert statuses["not_null_people_age"] == "warn"  # warn severity: reported, not fatal
    assert {s for n, s in statuses.items() if n != "not_null_people_age"} <= {"success", "pass"}
    assert query_rows(mini_project, "select count(*) from adults") == [(3,)]


def test_materializations(built_mini):
    kinds = dict(
        query_rows(built_mini, "select table_name, table_type from information_schema.tables")
    )
    assert kinds["stg_people"] == "VIEW"
    assert kinds["adults"] == "BASE TABLE"
    assert kinds["person_totals"] == "BASE TABLE"
    assert "stg_visits" not in kinds  # ephemeral: inlined, never created
    assert query_rows(
        built_mini,
        "select data_type from information_schema.columns "
        "where table_name = 'visits' and column_name = 'amount'",
    ) == [("DECIMAL(10,2)",)]


def test_python_sql_function_is_used(built_mini):
    assert query_rows(built_mini, "select distinct city from adults order by 1") == [
        ("LUND",),
        ("OSLO",),
    ]  # shout() from udfs/functions.py upper-cases the seed's cities


def test_python_step_output(built_mini):
    assert query_rows(built_mini, "select adults, min_age from adult_stats") == [(3, 18)]


def test_vars_change_results(built_mini):
    run = Project.load(built_mini, vars={"min_age": 30}).build(["adults+"])
    assert run.success
    assert query_rows(built_mini, "select name from adults order by 1") == [("Ann",), ("Cid",)]
    assert query_rows(built_mini, "select min_age from adult_stats") == [(30,)]


def test_run_does_not_run_tests_or_seeds(built_mini):
    run = Project.load(built_mini).run()
    assert [r.name for r in run.results] == MODELS_IN_ORDER
    assert {r.resource_type for r in run.results} == {"model", "python"}


def test_seed_only_seeds(built_mini):
    (built_mini / "seeds" / "people.csv").write_text("id,name,age,city\n9,Zed,40,Oslo\n")
    run = Project.load(built_mini).seed()
    assert [(r.name, r.status) for r in run.results] == [
        ("people", "success"),
        ("visits", "success"),
    ]
    assert query_rows(built_mini, "select count(*) from people") == [(1,)]
    assert query_rows(built_mini, "select count(*) from adults") == [(3,)]  # not rebuilt


def test_test_reads_the_current_database(built_mini):
    con = duckdb.connect(str(built_mini / "mini.duckdb"))
    con.execute("insert into people values (1, 'Ann again', '30', 'Oslo')")
    con.close()
    before = file_hash(built_mini / "mini.duckdb")
    run = Project.load(built_mini).test()
    statuses = _statuses(run)
    assert statuses["unique_people_id"] == "fail"
    assert statuses["unique_adults_id"] == "pass"
    assert {r.resource_type for r in run.results} == {"test"}
    assert not run.success and not run.committed
    assert file_hash(built_mini / "mini.duckdb") == before


def test_incremental_merges_and_full_refresh_rebuilds(built_mini):
    seed = built_mini / "seeds" / "people.csv"
    seed.write_text("id,name,age,city\n1,Anna,34,Oslo\n2,Bob,17,Lund\n3,Cid,52,Oslo\n")
    assert Project.load(built_mini).build().success
    rows = query_rows(built_mini, "select id, name from person_totals order by id")
    # merged on id: Ann updated in place, Dee and Eve (gone from the seed) kept, no duplicates
    assert rows == [(1, "Anna"), (2, "Bob"), (3, "Cid"), (4, "Dee"), (5, "Eve")]
    assert Project.load(built_mini, full_refresh=True).build().success
    assert query_rows(built_mini, "select id, name from person_totals order by id") == [
        (1, "Anna"),
        (2, "Bob"),
        (3, "Cid"),
    ]


def test_failing_error_test_skips_downstream_and_keeps_db(built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    _append(built_mini / "seeds" / "people.csv", "3,Cyd,60,Oslo\n")
    run = Project.load(built_mini).build()
    statuses = _statuses(run)
    assert statuses["unique_people_id"] == "fail"
    for name in ("stg_people", "adults", "person_totals", "adult_stats", "city_counts"):
        assert statuses[name] == "skipped"
    assert statuses["visits"] == "success"  # not downstream of people
    stg = next(r for r in run.results if r.name == "stg_people")
    assert stg.message == "skipped: test unique_people_id failed"
    failed = next(r for r in run.results if r.name == "unique_people_id")
    assert failed.message.startswith('1 failing row(s) in "people" (e.g. (3, 2))')
    assert not run.success and not run.committed
    assert file_hash(built_mini / "mini.duckdb") == before


def test_fail_fast_skips_everything_after_the_first_failure(built_mini):
    (built_mini / "seeds" / "people.csv").write_text("id,name,age,city\n1,a,1,x\n1,b,2,y\n")
    run = Project.load(built_mini).build(fail_fast=True)
    names = [r.name for r in run.results]
    first = names.index("unique_people_id")
    assert run.results[first].status == "fail"
    after = run.results[first + 1 :]
    assert after and all(r.status == "skipped" for r in after)
    assert "visits" in [r.name for r in after]  # independent, but skipped by --fail-fast


def test_python_step_exception_names_file_and_line(built_mini):
    before = file_hash(built_mini / "mini.duckdb")
    (built_mini / "udfs" / "boom.py").write_text(
        "import pandas as pd\n\n\ndef model(ctx):\n    adults = ctx.ref('adults').df()\n"
        "    return pd.DataFrame({'a': [1, 2], 'b': [len(adults)]})\n"
    )
    (built_mini / "models" / "marts" / "after_boom.sql").write_text(
        "select * from {{ ref('boom') }}\n"
    )
    run = Project.load(built_mini).build()
    boom = next(r for r in run.results if r.name == "boom")
    assert boom.status == "error"
    assert boom.message == (
        f"{Path('udfs/boom.py')}:6: ValueError: All arrays must be of the same length"
    )
    assert _statuses(run)["after_boom"] == "skipped"
    assert _statuses(run)["city_counts"] == "success"
    assert file_hash(built_mini / "mini.duckdb") == before


def test_run_results_and_manifest(built_mini):
    run = Project.load(built_mini).build()
    target = built_mini / "target"
    results = json.loads((target / "run_results.json").read_text())
    assert results["metadata"]["invocation_id"] == run.invocation_id
    assert results["command"] == "build"
    by_name = {r["name"]: r for r in results["results"]}
    assert by_name["adults"]["status"] == "success"
    assert by_name["adults"]["rows"] == 3
    assert by_name["adults"]["seconds"] >= 0
    assert by_name["adults"]["message"] == "created table adults (3 rows)"
    assert by_name["not_null_people_age"]["status"] == "warn"
    assert by_name["not_null_people_age"]["rows"] == 1
    manifest = json.loads((target / "manifest.json").read_text())["nodes"]
    assert manifest["adults"]["depends_on"] == ["stg_people"]
    assert manifest["adults"]["config"]["tags"] == ["marts"]
    assert (built_mini / manifest["adults"]["compiled_path"]).is_file()
    assert manifest["adult_stats"]["depends_on"] == ["adults"]
    assert manifest["adult_stats"]["resource_type"] == "python"


def test_build_writes_call_tables(built_mini):
    assert query_rows(built_mini, "select count(*) from run_errors") == [(0,)]
    columns = [row[0] for row in query_rows(built_mini, "describe llm_calls")]
    assert {"run_id", "step", "provider", "cache_hit", "cost_usd"} <= set(columns)


@pytest.mark.parametrize("select", [["tag:marts"], ["adults+"]])
def test_selected_build_keeps_unselected_tables(built_mini, select):
    run = Project.load(built_mini).build(select)
    assert run.success
    assert "people" not in {r.name for r in run.results}
    assert query_rows(built_mini, "select count(*) from people") == [(5,)]

"""`cpo.adapters.duckdb`: seeds, materializations, SQL functions and the atomic swap, on real
DuckDB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import file_hash

from cpo.adapters.duckdb import Database, SqlFunction, atomic_database
from cpo.adapters.staging import remove_stale_staging, staging_path
from cpo.errors import ModelError


@pytest.fixture
def db(tmp_path: Path):
    database = Database(tmp_path / "t.duckdb")
    yield database
    database.close()


def _seed(db: Database, tmp_path: Path, name: str, text: str, **kwargs) -> int:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    options = {"column_types": {}, "required_columns": [], "display_path": f"seeds/{name}"}
    return db.load_seed(path.stem, path, **{**options, **kwargs})


def test_csv_seed_is_varchar_unless_typed(db, tmp_path):
    rows = _seed(
        db,
        tmp_path,
        "p.csv",
        'id,amount,note\n1,2.50,"a, b"\n2,,x\n',
        column_types={"id": "INTEGER", "amount": "DECIMAL(6,2)"},
    )
    assert rows == 2
    assert db.columns("p") == [("id", "INTEGER"), ("amount", "DECIMAL(6,2)"), ("note", "VARCHAR")]
    assert db.fetch("select * from p order by id")[1] == [
        (1, pytest.approx(2.5), "a, b"),
        (2, None, "x"),
    ]


def test_malformed_csv_row_names_file_and_line(db, tmp_path):
    with pytest.raises(ModelError) as error:
        _seed(db, tmp_path, "p.csv", "id,name\n1,a\n2,b\n3,c,extra\n4,d\n")
    assert error.value.path == "seeds/p.csv"
    assert error.value.line == 4
    assert "Expected Number of Columns: 2 Found: 3" in error.value.message
    assert error.value.message == (
        "cannot load seed 'p': Expected Number of Columns: 2 Found: 3 (column 3). "
        "Fix the file and rebuild."
    )  # the row itself ("Original Line: 3,c,extra") may hold personal data: never echoed
    assert "Possible fixes" not in error.value.message


def test_unterminated_quote(db, tmp_path):
    with pytest.raises(ModelError) as error:
        _seed(db, tmp_path, "p.csv", 'id,name\n1,a\n2,"bobby@example.com\n')
    assert error.value.line == 3
    assert "unterminated quote" in error.value.message
    assert "the value in column 2 has an unterminated quote" in error.value.message
    assert "bobby" not in error.value.message  # never the value


def test_model_conversion_errors_do_not_quote_the_value(db):
    db.execute("create table c as select 'ann.o''hara@example.com' as email")
    with pytest.raises(ModelError) as error:
        db.materialize_sql("t", "select cast(email as integer) as x from c", "table")
    assert "Could not convert string '…' to INT32" in error.value.message
    assert "example.com" not in error.value.message and "hara" not in error.value.message


def test_bad_cast_names_the_line(db, tmp_path):
    with pytest.raises(ModelError) as error:
        _seed(db, tmp_path, "p.csv", "id,name\n1,a\n2,b\nx,c\n", column_types={"id": "INTEGER"})
    assert error.value.line == 4
    assert "a value in column id is not a valid INT32" in error.value.message
    assert "'x'" not in error.value.message  # the bad value itself is never echoed


def test_missing_required_column(db, tmp_path):
    with pytest.raises(ModelError) as error:
        _seed(db, tmp_path, "p.csv", "id,name\n1,a\n", required_columns=["id", "name", "city"])
    assert str(error.value) == (
        "seeds/p.csv:1: seed 'p' is missing required column(s) city; it has: id, name"
    )


def test_bad_header(db, tmp_path):
    with pytest.raises(ModelError, match="needs a header row of distinct, non-empty"):
        _seed(db, tmp_path, "p.csv", "id,id\n1,2\n")
    with pytest.raises(ModelError, match="needs a header row"):
        _seed(db, tmp_path, "q.csv", "")


def test_column_types_must_name_columns(db, tmp_path):
    with pytest.raises(ModelError, match="column_types names unknown column"):
        _seed(db, tmp_path, "p.csv", "id\n1\n", column_types={"idd": "INTEGER"})


def test_json_and_jsonl_seeds(db, tmp_path):
    assert _seed(db, tmp_path, "j.json", '[{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]') == 2
    assert _seed(db, tmp_path, "l.jsonl", '{"a": 1}\n{"a": 3}\n', column_types={"a": "DOUBLE"}) == 2
    assert db.columns("l") == [("a", "DOUBLE")]
    with pytest.raises(ModelError) as error:
        _seed(db, tmp_path, "bad.jsonl", '{"a": 1}\n{"a": \n')
    assert error.value.path == "seeds/bad.jsonl"
    assert "cannot load seed 'bad'" in error.value.message


def test_view_table_and_switching_kinds(db):
    assert db.materialize_sql("v", "select 1 as x", "view") is None
    assert db.relations()["v"] == "view"
    assert db.materialize_sql("v", "select 1 as x union all select 2", "table") == 2
    assert db.relations()["v"] == "table"
    db.materialize_sql("v", "select 3 as x", "view")
    assert db.relations()["v"] == "view"


def test_incremental_merges_on_unique_key(db):
    db.materialize_sql(
        "inc", "select 1 as id, 'a' as v union all select 2, 'b'", "incremental", ["id"]
    )
    rows = db.materialize_sql(
        "inc", "select 2 as id, 'B' as v union all select 3, 'c'", "incremental", ["id"]
    )
    assert rows == 3
    assert db.fetch("select * from inc order by id")[1] == [(1, "a"), (2, "B"), (3, "c")]
    db.materialize_sql("inc", "select 3 as id, 'c' as v", "incremental", [])  # append only
    assert db.count("inc") == 4


def test_sql_error_carries_duckdb_message(db):
    with pytest.raises(ModelError, match='Referenced column "nope" not found'):
        db.materialize_sql("t", "select nope from range(3)", "table")


def test_materialize_frame(db):
    assert db.materialize_frame("f", pd.DataFrame({"a": [1, 2]})) == 2
    assert db.materialize_frame("g", db.relation("select 42 as b")) == 1
    with pytest.raises(ModelError, match=r"must return a pandas DataFrame.*not dict"):
        db.materialize_frame("h", {"a": 1})


def test_sql_functions_are_registered(tmp_path):
    function = SqlFunction("twice", lambda x: x * 2, ("BIGINT",), "BIGINT")
    database = Database(tmp_path / "f.duckdb", functions=[function])
    try:
        assert database.fetch("select twice(21)")[1] == [(42,)]
    finally:
        database.close()


def _database_with(path: Path, value: int) -> None:
    database = Database(path)
    database.execute(f"create or replace table t as select {value} as v")
    database.close()


def test_atomic_database_commits_only_when_asked(tmp_path):
    target = tmp_path / "cpo.duckdb"
    _database_with(target, 1)
    before = file_hash(target)
    with atomic_database(target) as (staging, _commit):
        assert staging == staging_path(target)
        _database_with(staging, 2)
    assert file_hash(target) == before
    assert not staging.exists()
    with atomic_database(target) as (staging, commit):
        _database_with(staging, 3)
        commit()
    database = Database(target, read_only=True)
    assert database.fetch("select v from t")[1] == [(3,)]
    database.close()


def test_atomic_database_keeps_old_file_on_exception(tmp_path):
    target = tmp_path / "cpo.duckdb"
    _database_with(target, 1)
    before = file_hash(target)
    with pytest.raises(RuntimeError), atomic_database(target) as (staging, _commit):
        _database_with(staging, 2)
        raise RuntimeError("boom")
    assert file_hash(target) == before
    assert list(tmp_path.iterdir()) == [target]


def test_stale_staging_of_dead_process_is_removed(tmp_path):
    target = tmp_path / "cpo.duckdb"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".cpo.duckdb.building-{dead.stdout.strip()}"
    stale.write_bytes(b"half a database")
    live = tmp_path / f".cpo.duckdb.building-{os.getppid()}"
    live.write_bytes(b"another build in progress")
    assert remove_stale_staging(target) == [stale]
    assert not stale.exists()
    assert live.exists()  # a running build's file is never touched


def test_incremental_schema_change_suggests_full_refresh(db):
    db.materialize_sql("inc", "select 1 as id", "incremental", ["id"])
    with pytest.raises(ModelError, match="rebuild it with --full-refresh"):
        db.materialize_sql("inc", "select 2 as id, 'new' as extra", "incremental", ["id"])
    assert db.fetch("select * from inc")[1] == [(1,)]

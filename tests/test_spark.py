"""The Spark target: transpiling, cross-engine macros, identical results, atomic publish.

Tests marked ``spark`` need pyspark and Java; they share one local[2] session and one build of
a reduced sample (500 customers) on both engines.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from cpo.adapters.transpile import UnsupportedSqlError, to_spark
from cpo.engine.macros import macros
from cpo.engine.project import Project
from cpo.errors import ModelError
from tests.helpers import replace_in
from tests.sample import copy_sample_project

CUSTOMERS = 500


def _spark_missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "java is not installed (Debian: openjdk-17-jre-headless)"
    return None


needs_spark = pytest.mark.skipif(_spark_missing() is not None, reason=str(_spark_missing()))


def _normal(value: Any) -> Any:
    """A value comparable across engines (dates, timestamps, decimals, lists, NaN)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list | tuple):
        return tuple(_normal(v) for v in value)
    return value


def _rows(table: Any) -> tuple[list[str], list[tuple]]:
    columns = list(table.column_names)
    rows = [tuple(_normal(r[c]) for c in columns) for r in table.to_pylist()]
    return columns, sorted(rows, key=_key)


def _key(row: tuple) -> str:
    return repr(tuple(f"{v:.6g}" if isinstance(v, float) else v for v in row))


def _same(a: Any, b: Any) -> bool:
    """Equal; floats within 1e-9 relative (sums of doubles depend on Spark's partition order)."""
    if isinstance(a, float) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _spark_project(root: Path) -> Path:
    project = copy_sample_project(root)
    lines = (project / "seeds" / "customers.csv").read_text(encoding="utf-8").splitlines()
    # A column no model reads, with hostile text: exports neutralise formulas and keep quoting.
    notes = ['"note"', '"=1+2"', '"@Cmd, ""Quoted"" x"', '"plain"']
    lines = [f"{line},{notes[min(i, 3)]}" for i, line in enumerate(lines)]
    text = "\n".join(lines[: CUSTOMERS + 1]) + "\n"
    (project / "seeds" / "customers.csv").write_text(text, encoding="utf-8")
    return project


# -- no Spark needed ---------------------------------------------------------------------------


def test_a_refused_spark_connect_call_is_said_plainly() -> None:
    from cpo.adapters.spark.session import first_line

    grpc = (
        "<_MultiThreadedRendezvous of RPC that terminated with:\n"
        '\tstatus = StatusCode.UNAVAILABLE\n\tdetails = "failed to connect to all addresses"\n'
        '\tdebug_error_string = "UNKNOWN:Error received from peer"\n>'
    )
    assert first_line(RuntimeError(grpc)) == (
        "Spark Connect refused the call (UNAVAILABLE): failed to connect to all addresses; "
        "is the Spark Connect server running and reachable?"
    )


def test_transpile_keeps_duckdb_semantics() -> None:
    sql = to_spark(
        "select round(a * b, 2) as m, x / 3 as d, DATE '2026-11-24' - signup_date as days, "
        "* replace (upper(c) as c) from t"
    )
    assert "CAST(x AS DOUBLE) / 3" in sql  # DuckDB divides in double precision
    assert "DATEDIFF(CAST('2026-11-24' AS DATE), signup_date)" in sql  # days, not an interval
    assert "ROUND(CAST((a * b) AS DOUBLE) * CAST(1e2 AS DOUBLE), 0)" in sql
    assert "EXCEPT (c)" in sql and "UPPER(c) AS c" in sql  # Spark has no * REPLACE
    ordered = to_spark("select list(t order by p) from x")
    assert "ARRAY_SORT(COLLECT_LIST(STRUCT(p AS k, t AS v)))" in ordered


def test_sources_read_with_options_become_file_views() -> None:
    # What sources in cpo.yml compile to (read_parquet keeps its path in sqlglot's expressions).
    from cpo.adapters.transpile import file_views

    for sql, fmt in [
        ("select * from read_parquet('d/*.parquet', union_by_name = true)", "parquet"),
        ("select * from read_csv('d/c.csv', header = true, union_by_name = true)", "csv"),
        ("select * from read_parquet('d/c.parquet')", "parquet"),
    ]:
        [(view, kind, path)] = file_views(sql)
        assert kind == fmt and path.startswith("d/") and view.startswith(f"__cpo_{fmt}_")
        assert to_spark(sql) == f"SELECT * FROM {view}"


@pytest.mark.parametrize(
    ("sql", "construct", "hint"),
    [
        ("select regexp_full_match(email, 'a+')", "regexp_full_match", "regex_match"),
        ("select ('0x' || substr(md5(id), 1, 13))::bigint from t", "hexadecimal", "hash_bucket"),
        ("select timezone('UTC', ts) from t", "timezone", "utc_timestamp"),
        ("select no_such_function(1)", "no_such_function", ""),
    ],
)
def test_transpile_refuses_what_spark_cannot_run(sql: str, construct: str, hint: str) -> None:
    with pytest.raises(UnsupportedSqlError) as raised:
        to_spark(sql)
    assert construct in str(raised.value)
    assert hint in str(raised.value)


def test_registered_functions_are_allowed() -> None:
    assert "LOOKS_LIKE_INJECTION(b)" in to_spark(
        "select looks_like_injection(b)", ["looks_like_injection"]
    )


def test_a_model_spark_cannot_run_fails_at_compile_time(tmp_path: Path) -> None:
    project = copy_sample_project(tmp_path / "p")
    model = project / "models" / "segments" / "segments_rules.sql"
    model.write_text(
        model.read_text(encoding="utf-8").replace(
            "select\n        customer_id,",
            "select\n        regexp_full_match(customer_id, 'C.*') as x, customer_id,",
            1,
        ),
        encoding="utf-8",
    )
    with pytest.raises(ModelError) as raised:
        Project.load(project, target="spark").compile()
    message = str(raised.value)
    assert "segments_rules" in message and "regexp_full_match" in message
    assert "regex_match" in message  # how to fix it
    Project.load(project).compile()  # DuckDB runs it: only the Spark target refuses


def test_macros_render_each_dialect() -> None:
    duck, spark = macros("duckdb"), macros("spark")
    assert "'0x'" in duck["hash_bucket"]("id") and "conv(" in spark["hash_bucket"]("id")
    assert duck["regex_match"]("t", "a'b").startswith("regexp_full_match((t), 'a''b')")
    assert r"\z" in spark["regex_match"]("t", "a+")
    with pytest.raises(ValueError, match="dialect"):
        macros("postgres")


def test_spark_target_settings_are_validated(tmp_path: Path) -> None:
    from cpo.adapters import spark_settings
    from cpo.errors import ConfigurationError

    project = copy_sample_project(tmp_path / "p")
    config = project / "cpo.yml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "    master: local[2]\n", "    master: local[2]\n    mastr: x\n"
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as raised:
        spark_settings(Project.load(project, target="spark").config)
    assert "mastr" in str(raised.value.key) and raised.value.line
    config.write_text(
        config.read_text(encoding="utf-8").replace("    mastr: x\n", "    catalog: my-lake\n"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match="letters, digits and underscores") as raised:
        spark_settings(Project.load(project, target="spark").config)
    assert str(raised.value.key).endswith("catalog")


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            "    master: local[2]\n",
            "    master: local[2]\n    remote: sc://h:1\n",
            "spark.remote",
            "not both",
        ),
        (
            "    database: cpo.duckdb\n",
            "    database: cpo.duckdb\n    warehouse: w\n",
            "offline.warehouse",
            "only a spark target",
        ),
        (
            "    master: local[2]\n",
            "    master: local[2]\n    memory_limit: 2GB\n",
            "spark.memory_limit",
            "spark.driver.memory",
        ),
        (
            "    master: local[2]\n",
            "    master: local[2]\n    shuffle_partitions: 0\n",
            "spark.shuffle_partitions",
            "at least 1",
        ),
    ],
)
def test_engine_keys_belong_to_their_engine(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    """One schema checks targets at load time: a key of the other engine is an error."""
    from cpo.errors import ConfigurationError

    project = copy_sample_project(tmp_path / "p")
    replace_in(project / "cpo.yml", old, new, 1)
    with pytest.raises(ConfigurationError, match=message) as raised:
        Project.load(project, target="spark")
    assert raised.value.key == f"targets.{key}" and raised.value.line


def test_spark_settings_come_from_the_validated_target(tmp_path: Path) -> None:
    from cpo.adapters import spark_settings, target_type

    project = copy_sample_project(tmp_path / "p")
    replace_in(
        project / "cpo.yml",
        "    master: local[2]\n",
        "    remote: sc://h:15002\n    conf: {spark.driver.memory: 2g, x.n: 3}\n",
    )
    loaded = Project.load(project, target="spark").config
    settings = spark_settings(loaded)
    assert target_type(loaded) == "spark" and target_type(Project.load(project).config) == "duckdb"
    assert settings.master is None and settings.remote == "sc://h:15002"
    assert settings.conf == {"spark.driver.memory": "2g", "x.n": "3"}
    assert (settings.schema, settings.shuffle_partitions) == ("cpo", 8)


# -- Spark -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def connect_endpoint() -> tuple[int, str]:
    """The port and token of the Spark Connect server that the local session also runs."""
    import secrets

    return _free_port(), secrets.token_hex(16)


@pytest.fixture(scope="session")
def spark_sample(
    tmp_path_factory: pytest.TempPathFactory, connect_endpoint: tuple[int, str]
) -> Path:
    """The reduced sample built on DuckDB and on Spark (local[2]) in one folder.

    The local session's JVM also runs a Spark Connect server (Spark's own plugin, on 127.0.0.1,
    token from the environment, not cpo.yml) for `test_spark_connect_builds_the_sample_like_duckdb`:
    a second JVM, cold, made that test the suite's slowest minute.
    """
    if _spark_missing():
        pytest.skip(_spark_missing())
    project = _spark_project(tmp_path_factory.mktemp("spark") / "sample")
    port, token = connect_endpoint
    replace_in(
        project / "cpo.yml",
        "    schema: cpo\n",
        "    schema: cpo\n    conf:\n"
        "      spark.plugins: org.apache.spark.sql.connect.SparkConnectPlugin\n"
        "      spark.connect.grpc.binding.address: 127.0.0.1\n"
        f"      spark.connect.grpc.binding.port: '{port}'\n",
        count=1,
    )
    duck = Project.load(project).build()
    assert duck.success, [(r.name, r.message) for r in duck.results if r.failed]
    # seed + run (the data tests run on Spark in test_show_ls_test_on_the_spark_target).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", token)  # read by the JVM as it starts
        spark = Project.load(project, target="spark")
        for run in (spark.seed(), Project.load(project, target="spark").run()):
            assert run.success, [(r.name, r.message) for r in run.results if r.failed]
            assert run.committed
    yield project
    from cpo.adapters.spark import stop_session

    stop_session()


def _open(project: Path, target: str | None) -> Any:
    from cpo.adapters import open_adapter

    return open_adapter(Project.load(project, target=target).config, read_only=True)


def _table(db: Any, name: str) -> Any:
    relation = db.relation(f'select * from "{name}"')
    return relation.to_arrow_table()


@needs_spark
@pytest.mark.spark
def test_hash_bucket_is_identical_on_both_engines(spark_sample: Path) -> None:
    duck, spark = _open(spark_sample, None), _open(spark_sample, "spark")
    keys = ", ".join(f"({k})" for k in range(10))
    ids = (
        "select 'exp:salt:' || c.customer_id || ':' || cast(v.k as varchar) as id "
        f'from "customers" as c, (values {keys}) as v(k)'
    )
    duck_sql = f"select id, {macros('duckdb')['hash_bucket']('id')} as b from ({ids})"
    spark_sql = f"select id, {macros('spark')['hash_bucket']('id')} as b from ({ids})"
    expected = dict(duck.fetch(duck_sql)[1])
    got = dict(spark.fetch(spark_sql)[1])
    duck.close()
    spark.close()
    assert len(expected) == 5000
    assert got == expected  # bit for bit: the same double for every id
    assert all(0 <= b < 1 for b in got.values())


@needs_spark
@pytest.mark.spark
def test_every_table_is_identical_on_spark_and_duckdb(spark_sample: Path) -> None:
    duck, spark = _open(spark_sample, None), _open(spark_sample, "spark")
    try:
        names = set(spark.relations())
        assert {"segments", "assignments", "messages", "experiment_results"} <= names
        ledger = {"provider_calls", "llm_calls"}  # every build's history: grows with each build
        assert names == set(duck.relations()) - ledger | (ledger & names)
        for name in sorted(names - ledger - {"run_errors"}):
            d_columns, d_rows = _rows(_table(duck, name))
            s_columns, s_rows = _rows(_table(spark, name))
            assert s_columns == d_columns, name
            assert len(s_rows) == len(d_rows), name
            differ = [(d, s) for d, s in zip(d_rows, s_rows, strict=True) if not _same(d, s)]
            assert not differ, f"{name} differs between DuckDB and Spark: {differ[:2]}"
        # The acceptance point in one line: the same segment and arm for every customer.
        q = 'select customer_id, segment_id from "segments"'
        assert sorted(spark.fetch(q)[1]) == sorted(duck.fetch(q)[1])
        assert len(spark.fetch(q)[1]) == CUSTOMERS
    finally:
        duck.close()
        spark.close()


@needs_spark
@pytest.mark.spark
def test_show_ls_test_on_the_spark_target(spark_sample: Path) -> None:
    project = Project.load(spark_sample, target="spark")
    columns, rows = project.show(select="segment_profiles", limit=3)
    assert "segment_id" in columns and len(rows) == 3
    columns, rows = project.show(inline="select count(*) as n from stg_customers")
    assert rows == [(CUSTOMERS,)]
    assert "assignments" in {n.name for n in project.ls()}
    run = Project.load(spark_sample, target="spark").test(select=["+segments"])
    assert run.results and all(r.status == "pass" for r in run.results)


@needs_spark
@pytest.mark.spark
def test_a_failed_spark_build_leaves_the_published_tables(spark_sample: Path) -> None:
    from cpo.adapters import spark_settings
    from cpo.adapters.warehouse import POINTER, current_version, schema_dir

    config = Project.load(spark_sample, target="spark").config
    settings = spark_settings(config)
    pointer = (schema_dir(settings) / POINTER).read_text(encoding="utf-8")
    published = current_version(settings)
    files = sorted(p.relative_to(published) for p in published.rglob("*"))
    before = _open(spark_sample, "spark").fetch('select * from "segment_profiles"')[1]

    # segments builds, then segment_profiles fails: nothing of this build may be published.
    model = spark_sample / "models" / "segments" / "segment_profiles.sql"
    original = model.read_text(encoding="utf-8")
    model.write_text(original.replace("count(*) as customers", "no_such_column as customers"))
    try:
        run = Project.load(spark_sample, target="spark").build(select=["segments+"])
    finally:
        model.write_text(original, encoding="utf-8")
    assert not run.success and not run.committed
    assert any(r.name == "segments" and r.status == "success" for r in run.results)
    assert (schema_dir(settings) / POINTER).read_text(encoding="utf-8") == pointer
    assert sorted(p.relative_to(published) for p in published.rglob("*")) == files
    assert _open(spark_sample, "spark").fetch('select * from "segment_profiles"')[1] == before
    assert not list(schema_dir(settings).glob(".building-*"))  # the staging folder is gone


@needs_spark
@pytest.mark.spark
def test_parquet_sources_union_columns_by_name_on_spark(spark_sample: Path, tmp_path: Path) -> None:
    # sources.customers as a glob of Parquet files whose columns differ, as DuckDB reads them.
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2], "tier": ["gold", None]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": [3], "city": ["Oslo"]}), tmp_path / "b.parquet")
    sql = f"select * from read_parquet('{tmp_path}/*.parquet', union_by_name = true)"
    db = _open(spark_sample, "spark")
    try:
        columns, rows = db.fetch(sql)
    finally:
        db.close()
    assert sorted(columns) == ["city", "id", "tier"] and len(rows) == 3


def _add_target(project: Path, name: str, body: str) -> str:
    """Add a spark target to cpo.yml; return the original text (to restore)."""
    config = project / "cpo.yml"
    original = config.read_text(encoding="utf-8")
    target = (
        f"  {name}:\n    type: spark\n{body}"
        "    providers:\n      retrieval: {type: bm25, audience_mode: boost}\n"
        "      generation: {type: offline}\n      safety: {type: offline}\n"
    )
    config.write_text(original.replace("targets:\n", "targets:\n" + target, 1), encoding="utf-8")
    return original


@needs_spark
@pytest.mark.spark
def test_catalog_schema_target_publishes_only_a_passing_build(spark_sample: Path) -> None:
    """catalog: spark_catalog, schema: cpo -- the project's name. A database of that name that
    already holds someone's table survives (the adapter's own databases have unique names and
    only those are dropped); tables are published into it only when the build passed."""
    from cpo.adapters import spark_settings
    from cpo.adapters.spark import session
    from cpo.adapters.spark.publish import MARK

    original = _add_target(
        spark_sample, "lake", "    master: local[2]\n    catalog: spark_catalog\n    schema: cpo\n"
    )
    model = spark_sample / "models" / "segments" / "segment_profiles.sql"
    sql = model.read_text(encoding="utf-8")
    try:
        spark = session(spark_settings(Project.load(spark_sample, target="lake").config))
        spark.sql("create database if not exists cpo")
        spark.sql("create table cpo.theirs using parquet as select 7 as x, 'keep me' as note")
        before = {d.name for d in spark.catalog.listDatabases()}
        plain = _open(spark_sample, "spark")  # the warehouse-only target, schema cpo too
        assert plain.count("segments") == CUSTOMERS and plain.database.startswith("cpo_cpo_")
        plain.close()

        run = Project.load(spark_sample, target="lake").build(select=["segment_profiles"])
        assert run.success and run.committed, [r.message for r in run.results if r.failed]
        assert spark.sql("select * from cpo.theirs").collect() == [(7, "keep me")]
        assert {d.name for d in spark.catalog.listDatabases()} == before  # internal ones dropped
        published = {t.name: t.tableType for t in spark.catalog.listTables("spark_catalog.cpo")}
        assert published["segment_profiles"] == "EXTERNAL" and published["dim_customer"] == "VIEW"
        assert spark.table("cpo.dim_customer").count() == CUSTOMERS  # a view over the tables
        owner = spark.sql(f"show tblproperties cpo.segments ('{MARK}')").collect()[0][1]
        assert owner.endswith("cpo")
        profiles = sorted(spark.table("cpo.segment_profiles").collect())

        # A failed build: nothing in the published schema changes.
        model.write_text(sql.replace("count(*) as customers", "no_such_column as customers"))
        run = Project.load(spark_sample, target="lake").build(select=["segment_profiles"])
        assert not run.success and not run.committed
        spark.catalog.refreshTable("cpo.segment_profiles")
        assert sorted(spark.table("cpo.segment_profiles").collect()) == profiles
        model.write_text(sql, encoding="utf-8")

        # A table of a model's name that CPO did not publish is never replaced.
        spark.sql("drop view cpo.dim_customer")
        spark.sql("create table cpo.dim_customer using parquet as select 1 as mine")
        with pytest.raises(ModelError, match="dim_customer, which CPO did not publish"):
            Project.load(spark_sample, target="lake").build(select=["segment_profiles"])
        assert spark.sql("select * from cpo.dim_customer").collect() == [(1,)]
        assert spark.sql("select * from cpo.theirs").collect() == [(7, "keep me")]
    finally:
        model.write_text(sql, encoding="utf-8")
        (spark_sample / "cpo.yml").write_text(original, encoding="utf-8")


@needs_spark
@pytest.mark.spark
def test_report_and_docs_on_the_spark_target(spark_sample: Path) -> None:
    # Both read the Spark build through the adapter: the same sections, counts and types.
    import re

    project = Project.load(spark_sample, target="spark")
    html = project.report(spark_sample / "spark-report.html").read_text(encoding="utf-8")
    assert "No database yet" not in html and "Cannot open" not in html
    for section in ("decision", "results", "funnel", "srm", "freshness", "variants", "calls"):
        assert f'id="{section}"' in html
    assert set(re.findall(r'<img id="(plot-[a-z]+)"', html)) >= {"plot-forest", "plot-funnel"}
    page = (project.docs().parent / "nodes" / "dim_customer.html").read_text(encoding="utf-8")
    assert re.search(rf"<tr><th>rows</th><td>{CUSTOMERS}\s*\(view\)</td></tr>", page)


def _csv_rows(folder: Path, relative: str) -> list[dict[str, str]]:
    import csv

    path = folder / relative
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    rows: list[dict[str, str]] = []
    for file in files:
        with file.open(encoding="utf-8", newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


@needs_spark
@pytest.mark.spark
def test_export_on_spark_writes_what_duckdb_writes(spark_sample: Path, tmp_path: Path) -> None:
    import json

    import pyarrow.parquet as pq

    tables = ["customers", "assignments", "segment_profiles"]
    duck = Project.load(spark_sample).export("csv", tables, tmp_path / "duck")
    spark = Project.load(spark_sample, target="spark").export("csv", tables, tmp_path / "spark")
    assert spark.rows == duck.rows and spark.rows["assignments"] == CUSTOMERS
    d_manifest = json.loads(duck.manifest_path.read_text(encoding="utf-8"))
    s_manifest = json.loads(spark.manifest_path.read_text(encoding="utf-8"))
    assert s_manifest["metadata"]["database"].startswith("spark:cpo/v-")
    for name in tables:  # the same columns and PII handling (in Spark's type names)
        pii = [(c["name"], c["pii"]) for c in d_manifest["tables"][name]["columns"]]
        assert [(c["name"], c["pii"]) for c in s_manifest["tables"][name]["columns"]] == pii
        if name == "customers":
            assert ("email", "hashed") in pii and ("first_name", "hashed") in pii
    # Every customer's text is the same: PII hashed with the same salt, formulas guarded.
    d_rows = _csv_rows(tmp_path / "duck", "customers.csv")
    s_rows = _csv_rows(tmp_path / "spark", "customers")
    key = ["customer_id", "email", "first_name", "city", "note"]
    assert sorted(tuple(r[k] for k in key) for r in s_rows) == sorted(
        tuple(r[k] for k in key) for r in d_rows
    )
    notes = {r["note"] for r in s_rows}
    assert notes == {"'=1+2", '\'@Cmd, "Quoted" x', "plain"}
    assert not any("@" in r["email"] for r in s_rows)  # no address left
    # Parquet, partitioned by arm: Spark's part files, the same rows per arm as DuckDB's.
    out = tmp_path / "parquet"
    result = Project.load(spark_sample, target="spark").export(
        "parquet", ["assignments"], out, partition_by="arm"
    )
    (table,) = result.tables
    assert table.partition_by == "arm" and table.files >= 2
    arms = sorted(p.name for p in (out / "assignments").iterdir())
    assert arms and all(a.startswith("arm=") for a in arms)
    read = pq.read_table(out / "assignments").to_pandas()
    _, expected = _open(spark_sample, None).fetch(
        'select arm, count(*) from "assignments" group by arm'
    )
    assert read.groupby("arm").size().to_dict() == dict(expected)
    assert not list(out.rglob("_SUCCESS")) and not list(out.rglob("*.crc"))


# -- Spark Connect -----------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect_missing() -> str | None:
    missing = _spark_missing()
    if missing:
        return missing
    try:
        import grpc  # noqa: F401
        import zstandard  # noqa: F401
        from google.rpc import status_pb2  # noqa: F401
    except ImportError as e:
        return f"the Spark Connect client needs {e.name}: pip install -e '.[spark]'"
    return None


@pytest.fixture(scope="module")
def connect_server(spark_sample: Path, connect_endpoint: tuple[int, str]) -> Any:
    """The Spark Connect server of the local session's JVM (`spark_sample`): its URL and token.

    It is Spark's own Connect service (SparkConnectPlugin, as `start-connect-server.sh` runs
    it), reached over gRPC like any remote server; its Python workers import cpo and the
    project's udfs/ as a cluster with cpo installed would.
    """
    if _connect_missing():
        pytest.skip(_connect_missing())
    port, token = connect_endpoint
    # localhost: pyspark sends a token without TLS only to localhost.
    url = f"sc://localhost:{port}"
    yield url, token
    from cpo.adapters.spark import stop_session

    stop_session(url)  # the local session stays for the other tests


@needs_spark
@pytest.mark.spark
def test_spark_connect_builds_the_sample_like_duckdb(
    connect_server: tuple[str, str], spark_sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, token = connect_server
    project = spark_sample
    config = project / "cpo.yml"
    original = config.read_text(encoding="utf-8")
    target = (
        "  connect:\n    type: spark\n"
        f"    remote: {url}\n    warehouse: connect-warehouse\n    schema: cpo\n"
        "    providers:\n      retrieval: {type: bm25, audience_mode: boost}\n"
        "      generation: {type: offline}\n      safety: {type: offline}\n"
    )
    config.write_text(original.replace("targets:\n", "targets:\n" + target, 1), encoding="utf-8")
    try:
        from cpo.adapters import open_adapter, spark_settings
        from cpo.adapters.spark import is_connect, session, stop_session

        # The server checks the token: a wrong one is refused, with the engine's clear error.
        monkeypatch.setenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", "not-the-token")
        refused = Project.load(project, target="connect").build(select=["stg_customers"])
        assert not refused.success and not refused.committed
        message = refused.results[0].message
        assert "Spark Connect refused the call (UNAUTHENTICATED): Invalid authentication" in message
        assert "SPARK_CONNECT_AUTHENTICATE_TOKEN" in message and "Rendezvous" not in message
        stop_session(url)
        # Auth from the environment: pyspark sends the token; the URL in cpo.yml holds none.
        monkeypatch.setenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", token)
        connect = Project.load(project, target="connect")
        # Up to retrieval: SQL models, a @sql_function (stg_content's looks_like_injection,
        # run by the server's workers, which import cpo and udfs/) and a Python step whose
        # frame the server stores. The later layers are the local target's tests' (a cold JVM
        # per server makes a whole second build the suite's slowest minutes).
        run = connect.build(select=["+retrieved_content"])
        assert run.success, [(r.name, r.message) for r in run.results if r.failed][:3]
        built = {r.name for r in run.results if r.status == "success"}
        assert run.committed and {"stg_content", "segments", "retrieved_content"} <= built
        assert "variants" not in built
        assert is_connect(session(spark_settings(connect.config)))
        duck = _open(project, None)
        remote = open_adapter(connect.config, read_only=True)
        try:
            for name in ("segments", "segment_profiles", "retrieved_content"):
                d_columns, d_rows = _rows(_table(duck, name))
                r_columns, r_rows = _rows(_table(remote, name))
                assert r_columns == d_columns and len(r_rows) == len(d_rows), name
                pairs = zip(d_rows, r_rows, strict=True)
                assert all(_same(d, r) for d, r in pairs), f"{name} differs over Connect"
            assert remote.count("segments") == CUSTOMERS
        finally:
            remote.close()
            duck.close()
    finally:
        config.write_text(original, encoding="utf-8")


@needs_spark
@pytest.mark.spark
def test_a_python_step_returning_a_relation_stays_in_spark(
    spark_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ctx.ref()/ctx.sql() give Spark relations; a step returning one is written by Spark
    (per-customer work stays in the engine: nothing is collected to the driver)."""
    from pyspark.sql import DataFrame

    from cpo.adapters.spark import SparkDatabase, SparkRelation
    from tests.conftest import copy_fixture

    root = copy_fixture("mini", tmp_path / "mini")
    config = root / "cpo.yml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "targets:\n",
            "targets:\n  spark:\n    type: spark\n    master: local[2]\n    schema: mini\n",
        ),
        encoding="utf-8",
    )
    (root / "udfs" / "per_person.py").write_text(
        "def model(ctx):\n"
        "    people = ctx.ref('stg_people').project('id, shout(name) as loud')\n"
        "    ctx.ref('visits')\n"
        "    visits = ctx.sql(\n"
        "        'select person_id as id, count(*) as visits from visits group by 1'\n"
        "    )\n"
        "    return people.join(visits.spark, 'id', 'left').fillna(0, ['visits'])\n",
        encoding="utf-8",
    )
    seen: dict[str, Any] = {}
    collected: list[str] = []
    real = SparkDatabase.materialize_frame

    def spy(self: SparkDatabase, name: str, frame: Any) -> int:
        if name != "per_person":
            return real(self, name, frame)
        seen["frame"] = frame
        with monkeypatch.context() as m:
            for method in ("collect", "toPandas", "toArrow", "toLocalIterator", "take"):
                m.setattr(DataFrame, method, lambda *a, _m=method, **k: collected.append(_m))
            return real(self, name, frame)

    monkeypatch.setattr(SparkDatabase, "materialize_frame", spy)
    run = Project.load(root, target="spark").build()
    assert run.success, [(r.name, r.message) for r in run.results if r.failed]
    assert isinstance(seen["frame"], SparkRelation | DataFrame)  # Spark's, not pandas
    assert collected == []  # stored by Spark without a collect to the driver
    db = _open(root, "spark")
    try:
        _, rows = db.fetch('select id, loud, visits from "per_person" order by id')
    finally:
        db.close()
    assert rows and all(isinstance(r[2], int) for r in rows)
    assert all(r[1] == r[1].upper() for r in rows if r[1])  # the @sql_function ran in Spark

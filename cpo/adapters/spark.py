"""The Apache Spark adapter: the only module that imports pyspark.

It has the public surface of `cpo.adapters.duckdb.Database`. SQL arrives in DuckDB's dialect (the
models'
own) and is transpiled by `cpo.adapters.transpile`. Tables are Parquet folders of a version
folder (`cpo.adapters.warehouse`), registered in a Spark database of this session; views are
kept as their SQL and recreated when the version is opened. Python steps receive a
`SparkRelation` from ``ctx.ref``: a Spark DataFrame with the few DuckDB relation methods the
steps use (``df``, ``fetchall``, ``to_arrow_table``, ...), so per-customer work can stay in Spark.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cpo.adapters import SparkSettings
from cpo.adapters.transpile import UnsupportedSqlError, file_views, to_spark
from cpo.adapters.warehouse import VIEWS, current_version, relations
from cpo.engine.compile import quote
from cpo.errors import ModelError, UsageError

_LOCK = threading.Lock()
_SESSIONS: dict[str, Any] = {}  # "local" (one SparkContext per process) or a Connect URL
log = logging.getLogger("cpo")


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def is_connect(spark: Any) -> bool:
    """Whether a session is a Spark Connect client (no SparkContext, no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def session(settings: SparkSettings) -> Any:
    """The process's Spark session for the target (started once per endpoint, then reused).

    ``master`` targets share this process's one SparkContext; each ``remote`` URL gets its own
    Spark Connect client (a token comes from the URL or ``SPARK_CONNECT_AUTHENTICATE_TOKEN``).
    """
    key = settings.remote or "local"
    with _LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        try:
            from pyspark.sql import SparkSession
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ModelError(
                "the spark target needs pyspark: pip install -e '.[spark]' (and Java 17)"
            ) from e
        import cpo

        # Python workers import cpo and the project's udfs/ (SQL functions run there).
        paths = [str(Path(cpo.__file__).resolve().parent.parent), str(settings.root / "udfs")]
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([old] if old else [])])
        if settings.remote:
            # Connect's own builder: a Connect client may live next to a local SparkContext.
            from pyspark.sql.connect.session import SparkSession as ConnectSession

            builder = ConnectSession.builder.remote(settings.remote)
        else:
            builder = SparkSession.builder.appName("cpo").master(settings.master or "local[2]")
            catalog_dir = settings.warehouse_path / ".catalog"
            builder = (
                builder.config("spark.sql.warehouse.dir", str(catalog_dir))
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.driver.extraJavaOptions", "-Dderby.system.home=" + str(catalog_dir))
            )
        conf = {
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
            **settings.conf,
        }
        if settings.remote:
            # A Connect client sets session settings only (the server owns memory, cores...).
            conf.pop("spark.sql.execution.arrow.pyspark.enabled")
        else:
            for key_, value in conf.items():
                builder = builder.config(key_, value)
        try:
            spark = builder.getOrCreate()
            if settings.remote:
                for key_, value in conf.items():
                    with contextlib.suppress(Exception):  # static settings stay the server's
                        spark.conf.set(key_, value)
        except Exception as e:
            raise ModelError(
                f"cannot start Spark ({settings.remote or settings.master}): "
                f"{_first_line(e)}"
                + (
                    "; is the Spark Connect server running and reachable?"
                    if settings.remote
                    else "; is Java 17 installed (java -version)?"
                )
            ) from e
        if not settings.remote:
            with contextlib.suppress(Exception):
                spark.sparkContext.setLogLevel("ERROR")
        # pyspark logs every failed query with its JVM stack; the adapter reports it instead.
        logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
        _SESSIONS[key] = spark
        return spark


def stop_session() -> None:
    """Stop the process's Spark sessions (tests and benchmarks; builds keep them)."""
    with _LOCK:
        for spark in _SESSIONS.values():
            with contextlib.suppress(Exception):
                spark.stop()
        _SESSIONS.clear()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    # Spark's message, without the logical plan and JVM stack that follow it.
    sqlstate = re.search(r"SQLSTATE: \w+", text)
    if sqlstate:
        text = text[: sqlstate.end()]
    lines = [line for line in text.splitlines() if line.strip() and "JVM stacktrace" not in line]
    kept = []
    for line in lines:
        if line.startswith(("\tat ", "at ", "    at ")) or line.strip().startswith("at "):
            break
        kept.append(line.strip())
    return " ".join(kept)[:600] or type(error).__name__


def spark_type(duckdb_type: str) -> str:
    """A DuckDB type name as Spark DDL (``VARCHAR`` -> ``STRING``)."""
    from sqlglot import exp

    return exp.DataType.build(duckdb_type, dialect="duckdb").sql("spark")


class _Cursor:
    """What `SparkDatabase.execute` returns: rows already collected (results are small)."""

    def __init__(self, columns: list[str], rows: list[tuple]) -> None:
        self.description = [(c,) for c in columns]
        self._rows = rows
        self._at = 0

    def fetchone(self) -> tuple | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple]:
        rows, self._at = self._rows[self._at :], len(self._rows)
        return rows


class SparkRelation:
    """A Spark DataFrame with the DuckDB relation methods Python steps use.

    Everything else is the DataFrame's own (``relation.groupBy(...)``, ``relation.spark``).
    ``df()``/``fetchall()`` collect to the driver: use them for small results (segments x
    tones); keep per-customer work in Spark (``relation.spark`` and the DataFrame API).
    """

    def __init__(self, frame: Any, db: SparkDatabase) -> None:
        self.spark = frame
        self._db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self.spark, name)

    @property
    def columns(self) -> list[str]:
        """Column names."""
        return list(self.spark.columns)

    def df(self) -> Any:
        """Collect to a pandas DataFrame."""
        return self.spark.toPandas()

    def to_arrow_table(self) -> Any:
        """Collect to an Arrow table."""
        return self.spark.toArrow()

    def arrow(self) -> Any:
        """Collect to an Arrow table."""
        return self.to_arrow_table()

    def fetchall(self) -> list[tuple]:
        """Collect every row as a tuple."""
        return [tuple(row) for row in self.spark.collect()]

    def fetchone(self) -> tuple | None:
        """The first row."""
        rows = self.spark.limit(1).collect()
        return tuple(rows[0]) if rows else None

    def _expressions(self, text: str) -> list[str]:
        import sqlglot

        tree = sqlglot.parse_one(f"select {text}", read="duckdb")
        names = self._db._names  # the registered SQL functions
        return [
            to_spark(f"select {e.sql('duckdb')}", names)[len("SELECT ") :] for e in tree.expressions
        ]

    def project(self, expressions: str) -> SparkRelation:
        """Select expressions (DuckDB syntax), like DuckDB's ``relation.project``."""
        return SparkRelation(self.spark.selectExpr(*self._expressions(expressions)), self._db)

    def order(self, expressions: str) -> SparkRelation:
        """Sort by expressions (DuckDB syntax)."""
        from pyspark.sql.functions import expr

        return SparkRelation(
            self.spark.orderBy(*[expr(e) for e in self._expressions(expressions)]), self._db
        )

    def filter(self, condition: Any) -> SparkRelation:
        """Rows where `condition` (DuckDB syntax text, or a Spark column) holds."""
        if isinstance(condition, str):
            condition = self._expressions(condition)[0]
        return SparkRelation(self.spark.filter(condition), self._db)

    def aggregate(self, expressions: str, groups: str = "") -> SparkRelation:
        """Aggregate (DuckDB syntax), like DuckDB's ``relation.aggregate``."""
        exprs = self._expressions(expressions)
        if groups:
            keys = self._expressions(groups)
            return SparkRelation(self.spark.groupBy(*keys).agg(*_exprs(exprs)), self._db)
        return SparkRelation(self.spark.selectExpr(*exprs), self._db)

    def limit(self, n: int) -> SparkRelation:
        """The first `n` rows."""
        return SparkRelation(self.spark.limit(n), self._db)

    def count(self) -> int:  # type: ignore[override]
        """Row count (an int, like Spark's; DuckDB's relation.count() is an aggregate)."""
        return int(self.spark.count())


def _exprs(texts: Sequence[str]) -> list[Any]:
    from pyspark.sql.functions import expr

    return [expr(t) for t in texts]


class SparkDatabase:
    """A version of the Spark target's warehouse, open in the process's Spark session.

    Args:
        settings: The target's Spark settings.
        version: The version folder to open (None: the published version, read-only).
        read_only: Refuse writes.
        functions: SQL functions (``@sql_function``) to register as Spark UDFs.
    """

    dialect = "spark"

    def __init__(
        self,
        settings: SparkSettings,
        version: Path | None = None,
        *,
        read_only: bool = False,
        functions: Sequence[Any] = (),
    ) -> None:
        self.settings = settings
        published = version is None
        self.version = version or current_version(settings)
        self.read_only = read_only or published
        self.path = str(self.version or settings.warehouse_path / settings.schema)
        self.functions = list(functions)
        self._names = [f.name for f in self.functions]
        self._file_views: set[str] = set()
        suffix = "" if published else "__staging"
        self.database = f"{settings.schema}{suffix}"
        self._spark: Any = None

    # -- session and catalog -----------------------------------------------------------------

    @property
    def spark(self) -> Any:
        """The Spark session, with this version's tables and views registered (started lazily)."""
        if self._spark is None:
            spark = session(self.settings)
            self._spark = spark
            for function in self.functions:
                self._register(function)
            spark.sql(f"drop database if exists {_q(self.database)} cascade")
            spark.sql(f"create database {_q(self.database)}")
            spark.catalog.setCurrentDatabase(self.database)
            pending = []
            for name, kind in relations(self.version).items():
                if kind == "table":
                    self._register_table(name)
                else:
                    pending.append(name)
            self._create_views(pending)
        else:
            self._spark.catalog.setCurrentDatabase(self.database)
        return self._spark

    def _register_table(self, name: str) -> None:
        assert self.version is not None
        location = self.version / name
        self._spark.sql(f"drop table if exists {_q(name)}")
        self._spark.sql(f"create table {_q(name)} using parquet location {_literal(str(location))}")

    def _create_views(self, names: list[str]) -> None:
        """Recreate stored views (in any order: retried until their dependencies exist)."""
        assert self.version is not None
        pending = list(names)
        while pending:
            failed = []
            for name in pending:
                text = (self.version / VIEWS / f"{name}.sql").read_text(encoding="utf-8")
                try:
                    self._spark.sql(f"create or replace view {_q(name)} as\n{text}")
                except Exception:
                    failed.append(name)
            if len(failed) == len(pending):
                log.warning("views could not be recreated", extra={"views": failed})
                return
            pending = failed

    def _register(self, fn: Any) -> None:
        import pandas as pd
        import pyarrow as pa
        from pyspark import cloudpickle
        from pyspark.sql.functions import pandas_udf

        module = sys.modules.get(getattr(fn.function, "__module__", ""), None)
        if module is not None and module.__name__.startswith("cpo_project_udfs"):
            # Project modules are not importable on the workers: ship them by value.
            with contextlib.suppress(ValueError):
                cloudpickle.register_pickle_by_value(module)
        function = fn.function
        vectorized = fn.vectorized

        def run(*series: pd.Series) -> pd.Series:
            if vectorized:
                out = function(*(pa.Array.from_pandas(s) for s in series))
                return pd.Series(out.to_pandas() if hasattr(out, "to_pandas") else out)
            # DuckDB's default: NULL in any argument gives NULL without calling the function.
            return pd.Series(
                [
                    None
                    if any(v is None or v is pd.NA or v != v for v in values)
                    else function(*values)
                    for values in zip(*series, strict=True)
                ],
                dtype=object,
            )

        # pandas_udf reads the arity and Series types from the signature.
        names = [f"a{i}" for i in range(len(fn.parameters))]
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY, annotation=pd.Series)
                for n in names
            ],
            return_annotation=pd.Series,
        )
        run.__annotations__ = {**dict.fromkeys(names, pd.Series), "return": pd.Series}
        udf = pandas_udf(run, returnType=spark_type(fn.return_type))  # type: ignore[call-overload]
        if fn.side_effects:
            udf = udf.asNondeterministic()
        self._spark.udf.register(fn.name, udf)

    def close(self) -> None:
        """Drop this version's catalog entries (the files stay)."""
        if self._spark is not None:
            with contextlib.suppress(Exception):
                self._spark.catalog.setCurrentDatabase("default")
                self._spark.sql(f"drop database if exists {_q(self.database)} cascade")
            self._spark = None

    # -- queries -----------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        try:
            text = to_spark(sql, self._names)
        except UnsupportedSqlError as e:
            raise ModelError(f"SQL uses {e}") from None
        if "__cpo_" in text:
            self._register_files(sql)
        return text

    def _register_files(self, sql: str) -> None:
        """Files a model reads with DuckDB's read_csv/read_parquet/read_json become temp views
        (sources in cpo.yml); CSV columns are read as strings with a header, as DuckDB does."""
        for name, fmt, path in file_views(sql):
            if name in self._file_views:
                continue
            reader = self.spark.read
            try:
                if fmt == "csv":
                    frame = reader.option("header", True).option("inferSchema", True).csv(path)
                elif fmt == "parquet":
                    frame = reader.parquet(path)
                else:
                    frame = reader.json(path)
            except Exception as e:
                raise ModelError(f"cannot read {path!r} on Spark: {_first_line(e)}") from e
            frame.createOrReplaceTempView(name)
            self._file_views.add(name)

    def _frame(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        text = self._sql(sql)
        spark = self.spark
        try:
            if params:
                args = list(params) if isinstance(params, Sequence) else dict(params)
                return spark.sql(text, args=args)
            return spark.sql(text)
        except Exception as e:
            raise ModelError(_first_line(e)) from e

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        """Run a statement (DuckDB SQL); return a cursor over its (collected) rows.

        Raises:
            ModelError: with Spark's message, when the statement fails.
        """
        frame = self._frame(sql, params)
        try:
            rows = [tuple(r) for r in frame.collect()]
        except Exception as e:
            raise ModelError(_first_line(e)) from e
        return _Cursor(list(frame.columns), rows)

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run a query and return (column names, rows)."""
        cursor = self.execute(sql, params)
        return [d[0] for d in cursor.description], cursor.fetchall()

    def relation(self, sql: str, params: Sequence[Any] | None = None) -> SparkRelation:
        """A lazy Spark relation for a query (what Python steps receive)."""
        return SparkRelation(self._frame(sql, params), self)

    def preview(self, sql: str, limit: int) -> tuple[list[str], list[tuple]]:
        """Run one user-written query, read-only and with no file access: (columns, rows).

        Raises:
            UsageError: the text is not a single query, or it reads files.
            ModelError: the query fails.
        """
        import sqlglot
        from sqlglot import exp

        try:
            trees = [t for t in sqlglot.parse(sql, read="duckdb") if t is not None]
        except sqlglot.errors.ParseError as e:
            raise UsageError(f"the query does not parse: {str(e).splitlines()[0]}") from e
        if len(trees) != 1:
            raise UsageError(
                f"show --inline runs exactly one query; this text has {len(trees)} statements"
            )
        if not isinstance(trees[0], exp.Query):
            raise UsageError("show --inline runs read-only queries (SELECT, WITH, FROM)")
        if file_views(sql):
            raise UsageError("show --inline cannot read files; query the built tables")
        frame = self._frame(sql)
        try:
            rows = [tuple(r) for r in frame.limit(int(limit)).collect()]
        except Exception as e:
            raise ModelError(_first_line(e)) from e
        return list(frame.columns), rows

    @property
    def label(self) -> str:
        """What an export manifest names as its database: ``spark:<schema>/<version>``."""
        return f"spark:{self.settings.schema}/{self.version.name if self.version else '-'}"

    def export_table(
        self, sql: str, path: Path, *, fmt: str, partition_by: str | None = None
    ) -> tuple[list[Path], int]:
        """Write a query's rows (DuckDB SQL) as Parquet or CSV part files into folder `path`.

        Spark writes the files (nothing is collected to the driver); CSV quotes like DuckDB
        (``"`` doubled), nested values are written as text. The files are read back by Spark.

        Returns:
            The data files written, and the rows read back from them.

        Raises:
            ModelError: Spark cannot write or read back the files.
        """
        frame = self._frame(sql)
        csv = {
            "header": True,
            "escape": '"',
            "nullValue": "",
            "emptyValue": '""',
            "ignoreLeadingWhiteSpace": False,  # Spark trims cells by default; DuckDB does not
            "ignoreTrailingWhiteSpace": False,
            "timestampFormat": "yyyy-MM-dd HH:mm:ss[.SSSSSS]",
            "timestampNTZFormat": "yyyy-MM-dd HH:mm:ss[.SSSSSS]",
        }
        if fmt == "csv":
            from pyspark.sql import functions as f
            from pyspark.sql.types import ArrayType, MapType, StructType

            nested = (ArrayType, MapType, StructType)
            frame = frame.select(
                *[
                    f.col(_q(c.name)).cast("string").alias(c.name)
                    if isinstance(c.dataType, nested)
                    else f.col(_q(c.name))
                    for c in frame.schema.fields
                ]
            )
        writer = frame.write.mode("errorifexists")
        if partition_by:
            writer = writer.partitionBy(partition_by)
        try:
            if fmt == "parquet":
                writer.parquet(str(path))
            else:
                writer.options(**csv).csv(str(path))
        except Exception as e:
            raise ModelError(f"cannot export to {path}: {_first_line(e)}") from e
        for marker in [*path.rglob("_SUCCESS"), *path.rglob(".*.crc")]:
            marker.unlink()
        files = sorted(p for p in path.rglob(f"*.{fmt}") if p.is_file())
        if not files:
            return files, 0
        reader = self.spark.read
        try:
            if fmt == "parquet":
                back = reader.parquet(*[str(p) for p in files])
            else:
                back = reader.options(header=True, multiLine=True, escape='"').csv(
                    [str(p) for p in files]
                )
            return files, int(back.count())
        except Exception as e:
            raise ModelError(f"cannot read back the export in {path}: {_first_line(e)}") from e

    def relations(self) -> dict[str, str]:
        """Tables and views of this version: name -> ``table`` or ``view``."""
        return relations(self.version)

    def count(self, name: str) -> int:
        """Row count of a relation."""
        try:
            return int(self.spark.table(_q(name)).count())
        except Exception as e:
            raise ModelError(_first_line(e)) from e

    def columns(self, name: str) -> list[tuple[str, str]]:
        """(column, type) pairs of a relation, in Spark's type names."""
        schema = self.spark.table(_q(name)).schema
        return [(f.name, f.dataType.simpleString().upper()) for f in schema.fields]

    # -- writes ------------------------------------------------------------------------------

    def _writable(self) -> Path:
        if self.read_only or self.version is None:
            raise ModelError("the published Spark tables are read-only; build writes a new version")
        return self.version

    def drop(self, name: str) -> None:
        """Drop a table or view of that name, whichever exists."""
        version = self._writable()
        kind = self.relations().get(name)
        if kind == "view":
            with contextlib.suppress(Exception):
                self.spark.sql(f"drop view if exists {_q(name)}")
            (version / VIEWS / f"{name}.sql").unlink(missing_ok=True)
        elif kind == "table":
            with contextlib.suppress(Exception):
                self.spark.sql(f"drop table if exists {_q(name)}")
            shutil.rmtree(version / name, ignore_errors=True)

    def _write(self, name: str, frame: Any) -> int:
        """Write a DataFrame as table `name`: into a new folder, then renamed over the old."""
        version = self._writable()
        partial = version / f".{name}.{uuid.uuid4().hex[:8]}"
        try:
            frame.write.mode("overwrite").parquet(str(partial))
        except Exception as e:
            shutil.rmtree(partial, ignore_errors=True)
            raise ModelError(_first_line(e)) from e
        self.drop(name)
        os.rename(partial, version / name)
        self._register_table(name)
        return self.count(name)

    def materialize_sql(
        self, name: str, sql: str, materialized: str, unique_key: Sequence[str] | None = None
    ) -> int | None:
        """Create a view or table from (DuckDB) SQL, or merge into an incremental table.

        Returns:
            Rows in the resulting table (None for views).
        """
        version = self._writable()
        existing = self.relations().get(name)
        text = self._sql(sql)
        if materialized == "view":
            if existing == "table":
                self.drop(name)
            try:
                self.spark.sql(f"create or replace view {_q(name)} as\n{text}")
            except Exception as e:
                raise ModelError(_first_line(e)) from e
            (version / VIEWS).mkdir(exist_ok=True)
            (version / VIEWS / f"{name}.sql").write_text(text, encoding="utf-8")
            return None
        frame = self._frame(sql)
        if materialized == "incremental" and existing == "table":
            old = self.spark.table(_q(name))
            keys = list(unique_key or ())
            if keys:
                old = old.join(frame.select(*keys).distinct(), on=keys, how="left_anti")
            try:
                frame = old.unionByName(frame.select(*old.columns))
            except Exception as e:
                raise ModelError(
                    _first_line(e) + "\n  (merging into the existing table; if the model's "
                    "columns changed, rebuild it with --full-refresh)"
                ) from e
        return self._write(name, frame)

    def materialize_frame(self, name: str, frame: Any) -> int:
        """Store what a Python step returned (pandas, Arrow, a Spark relation) as a table.

        Raises:
            ModelError: the value is not table-like, or Spark cannot store it.
        """
        spark = self.spark
        if isinstance(frame, SparkRelation):
            frame = frame.spark
        elif type(frame).__module__.startswith("pyspark"):
            pass
        elif hasattr(frame, "schema") and hasattr(frame, "to_pandas"):  # Arrow table
            frame = _from_arrow(spark, frame)
        elif hasattr(frame, "columns") and hasattr(frame, "dtypes"):  # pandas
            import pyarrow as pa

            frame = _from_arrow(spark, pa.Table.from_pandas(frame, preserve_index=False))
        else:
            raise ModelError(
                "a Python step must return a pandas DataFrame, an Arrow table or a Spark "
                f"relation, not {type(frame).__name__}"
            )
        return self._write(name, frame)

    def load_seed(
        self,
        name: str,
        path: Path,
        *,
        column_types: Mapping[str, str],
        required_columns: Sequence[str],
        display_path: str,
    ) -> int:
        """Load a CSV or JSON(L) seed as a table; columns are strings unless typed.

        Raises:
            ModelError: a missing required column, an unknown typed column, a bad row or cast.
        """
        from pyspark.sql.types import StringType, StructField, StructType

        from cpo.adapters.seeds import check_seed_columns, csv_header

        spark = self.spark
        try:
            if path.suffix == ".csv":
                header = csv_header(path, display_path, name)
                schema = StructType([StructField(c, StringType()) for c in header])
                frame = spark.read.csv(
                    str(path),
                    header=True,
                    schema=schema,
                    mode="FAILFAST",
                    multiLine=True,
                    escape='"',
                    encoding="UTF-8",
                )
            else:
                frame = spark.read.json(str(path), multiLine=path.suffix == ".json")
        except ModelError:
            raise
        except Exception as e:
            raise ModelError(
                f"cannot load seed {name!r}: {_first_line(e)}", path=display_path, node=name
            ) from e
        columns = list(frame.columns)
        check_seed_columns(name, display_path, columns, required_columns, column_types)
        view = f"__cpo_seed_{hashlib.md5(name.encode()).hexdigest()[:8]}"  # noqa: S324
        frame.createOrReplaceTempView(view)
        select = ", ".join(
            f"cast({quote(c)} as {column_types[c]}) as {quote(c)}"
            if c in column_types
            else quote(c)
            for c in columns
        )
        try:
            return self._write(name, self._frame(f"select {select} from {view}"))
        except ModelError as e:
            raise ModelError(
                f"cannot load seed {name!r}: {e.message}. Fix the file and rebuild.",
                path=display_path,
                node=name,
            ) from e
        finally:
            spark.catalog.dropTempView(view)


def _from_arrow(spark: Any, table: Any) -> Any:
    """A Spark DataFrame from an Arrow table, with its schema given (Spark Connect cannot
    infer one from an empty table)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    table = _arrow_for_spark(table)
    return spark.createDataFrame(table, schema=from_arrow_schema(table.schema))


def _arrow_for_spark(table: Any) -> Any:
    """Arrow types Spark reads: large strings and dictionary columns made plain."""
    import pyarrow as pa

    fields = []
    for f in table.schema:
        kind = f.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if pa.types.is_large_string(kind) or pa.types.is_null(kind):
            kind = pa.string()  # an all-NULL column (pandas object) becomes text
        fields.append(pa.field(f.name, kind, f.nullable))
    return table.cast(pa.schema(fields))

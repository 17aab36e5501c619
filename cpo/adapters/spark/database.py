"""`SparkDatabase`: a version of the Spark target's warehouse, open in the process's session.

It has the public surface of `cpo.adapters.duckdb.Database`. SQL arrives in DuckDB's dialect (the
models' own) and is transpiled by `cpo.adapters.transpile`. Tables are Parquet folders of a
version folder (`cpo.adapters.warehouse`); views are kept as their SQL. Both are registered in a
database of the Spark catalog that this object creates under a name unique to it
(``cpo_<schema>_<8 hex>``) and drops on `close`: it never drops a database it did not create, so
a shared metastore (Databricks, Fabric, a Spark Connect server) loses nothing of anyone else's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cpo.adapters import SparkSettings
from cpo.adapters.spark.relation import Cursor, SparkRelation, from_arrow
from cpo.adapters.spark.session import (
    first_line,
    literal,
    quote_name,
    register_function,
    session,
)
from cpo.adapters.transpile import UnsupportedSqlError, file_views, to_spark
from cpo.adapters.warehouse import VIEWS, current_version, relations
from cpo.engine.compile import quote
from cpo.errors import ModelError, UsageError

log = logging.getLogger("cpo")


def internal_database(schema: str) -> str:
    """A catalog database name unique to one open version: ``cpo_<schema>_<8 hex>``."""
    return f"cpo_{schema}_{uuid.uuid4().hex[:8]}".lower()


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
        self.database = internal_database(settings.schema)
        self._created = False  # whether this object created `database` (and may drop it)
        self._spark: Any = None

    # -- session and catalog -----------------------------------------------------------------

    @property
    def spark(self) -> Any:
        """The Spark session, with this version's tables and views registered (started lazily)."""
        if self._spark is None:
            spark = session(self.settings)
            self._spark = spark
            try:  # the first calls that reach a Connect server: a refused token shows here
                for function in self.functions:
                    register_function(spark, function)
            except Exception as e:
                self._spark = None
                raise ModelError(f"cannot use the Spark session: {first_line(e)}") from e
            self._create_database()
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

    def _create_database(self) -> None:
        """Create this object's own catalog database; never reuse (or drop) an existing one."""
        for _ in range(3):
            try:
                # No IF NOT EXISTS: a database of that name, however unlikely, is someone's.
                self._spark.sql(f"create database {quote_name(self.database)}")
            except Exception as e:
                if "SCHEMA_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
                    raise ModelError(
                        f"cannot create the Spark database {self.database!r} for this build: "
                        f"{first_line(e)}"
                    ) from e
                self.database = internal_database(self.settings.schema)
                continue
            self._created = True
            return
        raise ModelError(f"cannot create a Spark database named like {self.database!r}")

    def _register_table(self, name: str) -> None:
        """Register the version's folder `name` as a table (this object's database is new, and
        `_write` drops the old table first: there is nothing to replace)."""
        assert self.version is not None
        location = literal(str(self.version / name))
        self._spark.sql(f"create table {quote_name(name)} using parquet location {location}")

    def _create_views(self, names: list[str]) -> None:
        """Recreate stored views (in any order: retried until their dependencies exist)."""
        assert self.version is not None
        pending = list(names)
        while pending:
            failed = []
            for name in pending:
                text = (self.version / VIEWS / f"{name}.sql").read_text(encoding="utf-8")
                try:
                    self._spark.sql(f"create or replace view {quote_name(name)} as\n{text}")
                except Exception:
                    failed.append(name)
            if len(failed) == len(pending):
                log.warning("views could not be recreated", extra={"views": failed})
                return
            pending = failed

    def close(self) -> None:
        """Drop the catalog database this object created (its tables are external: the files
        stay); a database it did not create is never dropped."""
        if self._spark is not None and self._created:
            with contextlib.suppress(Exception):
                if self._spark.catalog.currentDatabase() == self.database:
                    self._spark.catalog.setCurrentDatabase("default")
            with contextlib.suppress(Exception):
                self._spark.sql(f"drop database if exists {quote_name(self.database)} cascade")
            self._created = False
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
                elif fmt == "parquet":  # sources read every file's columns (union_by_name)
                    frame = reader.option("mergeSchema", True).parquet(path)
                else:
                    frame = reader.json(path)
            except Exception as e:
                raise ModelError(f"cannot read {path!r} on Spark: {first_line(e)}") from e
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
            raise ModelError(first_line(e)) from e

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        """Run a statement (DuckDB SQL); return a cursor over its (collected) rows.

        Raises:
            ModelError: with Spark's message, when the statement fails.
        """
        frame = self._frame(sql, params)
        try:
            rows = [tuple(r) for r in frame.collect()]
        except Exception as e:
            raise ModelError(first_line(e)) from e
        return Cursor(list(frame.columns), rows)

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run a query and return (column names, rows)."""
        cursor = self.execute(sql, params)
        return [d[0] for d in cursor.description], cursor.fetchall()

    def relation(self, sql: str, params: Sequence[Any] | None = None) -> SparkRelation:
        """A lazy Spark relation for a query (what Python steps receive)."""
        return SparkRelation(self._frame(sql, params), self._names)

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
            raise ModelError(first_line(e)) from e
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
                    f.col(quote_name(c.name)).cast("string").alias(c.name)
                    if isinstance(c.dataType, nested)
                    else f.col(quote_name(c.name))
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
            raise ModelError(f"cannot export to {path}: {first_line(e)}") from e
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
            raise ModelError(f"cannot read back the export in {path}: {first_line(e)}") from e

    def relations(self) -> dict[str, str]:
        """Tables and views of this version: name -> ``table`` or ``view``."""
        return relations(self.version)

    def count(self, name: str) -> int:
        """Row count of a relation (a table's from its Parquet footers: no Spark job)."""
        if self.version is not None and relations(self.version).get(name) == "table":
            parts = sorted((self.version / name).glob("*.parquet"))
            if parts:
                return _rows_in(parts)
        try:
            return int(self.spark.table(quote_name(name)).count())
        except Exception as e:
            raise ModelError(first_line(e)) from e

    def columns(self, name: str) -> list[tuple[str, str]]:
        """(column, type) pairs of a relation, in Spark's type names."""
        schema = self.spark.table(quote_name(name)).schema
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
                self.spark.sql(f"drop view if exists {quote_name(name)}")
            (version / VIEWS / f"{name}.sql").unlink(missing_ok=True)
        elif kind == "table":
            with contextlib.suppress(Exception):
                self.spark.sql(f"drop table if exists {quote_name(name)}")
            shutil.rmtree(version / name, ignore_errors=True)

    def _write(self, name: str, frame: Any) -> int:
        """Write a DataFrame as table `name`: into a new folder, then renamed over the old."""
        version = self._writable()
        partial = version / f".{name}.{uuid.uuid4().hex[:8]}"
        try:
            frame.write.mode("overwrite").parquet(str(partial))
        except Exception as e:
            shutil.rmtree(partial, ignore_errors=True)
            raise ModelError(first_line(e)) from e
        self.drop(name)  # the old table or view, from the catalog too
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
                self.spark.sql(f"create or replace view {quote_name(name)} as\n{text}")
            except Exception as e:
                raise ModelError(first_line(e)) from e
            (version / VIEWS).mkdir(exist_ok=True)
            (version / VIEWS / f"{name}.sql").write_text(text, encoding="utf-8")
            return None
        frame = self._frame(sql)
        if materialized == "incremental" and existing == "table":
            old = self.spark.table(quote_name(name))
            keys = list(unique_key or ())
            if keys:
                old = old.join(frame.select(*keys).distinct(), on=keys, how="left_anti")
            try:
                frame = old.unionByName(frame.select(*old.columns))
            except Exception as e:
                raise ModelError(
                    first_line(e) + "\n  (merging into the existing table; if the model's "
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
            frame = from_arrow(spark, frame)
        elif hasattr(frame, "columns") and hasattr(frame, "dtypes"):  # pandas
            import pyarrow as pa

            frame = from_arrow(spark, pa.Table.from_pandas(frame, preserve_index=False))
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
                f"cannot load seed {name!r}: {first_line(e)}", path=display_path, node=name
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


def _rows_in(parts: list[Path]) -> int:
    """Rows of a table's Parquet files, from their footers (no Spark job)."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(part).num_rows for part in parts)

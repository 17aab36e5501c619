"""The only engine module that talks to DuckDB: connect, load seeds, materialise, swap atomically.

A build never writes ``cpo.duckdb`` in place: it copies it to a staging file beside it, builds
there, and renames the staging file over ``cpo.duckdb`` only when everything succeeded. A rename
is atomic on POSIX, so a failed or killed build leaves the old file byte-identical, and readers
holding the old file open keep reading the old inode undisturbed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from duckdb.func import PythonUDFType

from cpo.adapters.seeds import check_seed_columns, seed_error, seed_reader
from cpo.adapters.staging import (
    keep_permissions,
    remove_stale_staging,
    set_aside_stale_wal,
    staging_path,
)
from cpo.engine.compile import quote, sql_literal
from cpo.errors import ConfigurationError, ModelError, UsageError

DUCKDB_VERSION = duckdb.__version__


def private_connection(extension: Path, *, fix: str) -> duckdb.DuckDBPyConnection:
    """A private in-memory connection (never the project's) with one extension file loaded.

    Extension autoinstall and autoload are off: nothing is ever downloaded. Used by providers
    that compute with DuckDB in memory (`cpo.providers.bm25`), so that only this module imports
    duckdb.

    Args:
        extension: The ``.duckdb_extension`` file to load.
        fix: What the user should do when it cannot be loaded (said in the error).

    Raises:
        ConfigurationError: the extension could not be loaded.
    """
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    conn = duckdb.connect(":memory:", config=config)
    try:
        conn.execute(f"LOAD {sql_literal(str(extension))}")
    except duckdb.Error as e:
        conn.close()
        raise ConfigurationError(
            f"could not load the DuckDB extension from {extension}: {e}; {fix}"
        ) from e
    return conn


@dataclass(frozen=True)
class SqlFunction:
    """A scalar Python function callable from SQL (declared in ``udfs/`` with `cpo.engine.udf`)."""

    name: str
    function: Callable[..., Any]
    parameters: tuple[str, ...]
    return_type: str
    side_effects: bool = False
    vectorized: bool = False


class Database:
    """A DuckDB connection with the project's SQL functions registered.

    Args:
        path: The database file (or ``:memory:``).
        read_only: Open without write access (for ``test``, ``show``, ``compile``).
        functions: SQL functions to register on the connection.
        threads: DuckDB worker threads (None: DuckDB's default).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        functions: Sequence[SqlFunction] = (),
        threads: int | None = None,
    ) -> None:
        self.path = str(path)
        config: dict[str, Any] = {"autoinstall_known_extensions": False}
        if threads:
            config["threads"] = threads
        try:
            self.con = duckdb.connect(self.path, read_only=read_only, config=config)
        except duckdb.Error as e:
            raise ModelError(f"cannot open database {self.path}: {e}") from e
        for function in functions:
            self._register(function)

    def _register(self, fn: SqlFunction) -> None:
        parameters: list[Any] = [duckdb.sqltype(p) for p in fn.parameters]
        self.con.create_function(
            fn.name,
            fn.function,
            parameters,
            duckdb.sqltype(fn.return_type),
            type=PythonUDFType.ARROW if fn.vectorized else PythonUDFType.NATIVE,
            side_effects=fn.side_effects,
        )

    def close(self) -> None:
        """Checkpoint and close, so the file on disk is complete with no WAL beside it."""
        with contextlib.suppress(duckdb.Error):
            self.con.execute("checkpoint")
        self.con.close()

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        """Run a statement and return the DuckDB cursor.

        Raises:
            ModelError: with DuckDB's message, when the statement fails.
        """
        try:
            return self.con.execute(sql, params)
        except duckdb.Error as e:
            raise ModelError(_message(e)) from e

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run a query and return (column names, rows)."""
        cursor = self.execute(sql, params)
        return [d[0] for d in cursor.description or []], cursor.fetchall()

    def preview(self, sql: str, limit: int) -> tuple[list[str], list[tuple]]:
        """Run one user-written query with no access to files or the network: (columns, rows).

        The text must parse (with DuckDB's own parser) as exactly one ``SELECT`` (``WITH``,
        ``FROM``-first and ``VALUES`` queries included); the statement runs as written, never
        pasted into a wrapper, after ``enable_external_access`` is switched off for this
        database, so ``read_csv``, ``COPY``, ``ATTACH`` and friends cannot reach the disk.

        Raises:
            UsageError: the text is not a single query.
            ModelError: the query fails.
        """
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as e:
            raise UsageError(f"the query does not parse: {str(e).strip()}") from e
        if not statements:
            raise UsageError("show --inline got no query (only comments or ';')")
        if len(statements) != 1:
            raise UsageError(
                f"show --inline runs exactly one query; this text has {len(statements)} "
                "statements (remove the extra ';'-separated statements)"
            )
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise UsageError(
                f"show --inline runs read-only queries (SELECT, WITH, FROM); "
                f"this is a {kind.name} statement"
            )
        self.con.execute("set enable_external_access = false")
        self.con.execute("set lock_configuration = true")
        try:
            cursor = self.con.execute(statements[0].query)
            columns = [d[0] for d in cursor.description or []]
            return columns, cursor.fetchmany(limit) if limit else []
        except duckdb.Error as e:
            raise ModelError(_message(e)) from e

    def relation(self, sql: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyRelation:
        """A lazy relation for a query (what Python steps receive from ``ctx.ref``/``ctx.sql``)."""
        if params:
            return self.con.query(sql, params=params)
        return self.con.sql(sql)

    def relations(self) -> dict[str, str]:
        """Existing tables and views in the main schema: name -> ``table`` or ``view``."""
        rows = self.con.execute(
            "select table_name, table_type from information_schema.tables "
            "where table_schema = 'main' and table_catalog = current_database()"
        ).fetchall()
        return {name: "view" if kind == "VIEW" else "table" for name, kind in rows}

    def count(self, name: str) -> int:
        """Row count of a relation."""
        return int(self._scalar(f"select count(*) from {quote(name)}"))

    def _scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """The first value of the first row of a query (None when it returns no row)."""
        row = self.con.execute(sql, params).fetchone()
        return row[0] if row else None

    def columns(self, name: str) -> list[tuple[str, str]]:
        """(column, type) pairs of a relation."""
        rows = self.con.execute(f"describe {quote(name)}").fetchall()
        return [(row[0], row[1]) for row in rows]

    def drop(self, name: str) -> None:
        """Drop a table or view of that name, whichever exists."""
        kind = self.relations().get(name)
        if kind:
            self.con.execute(f"drop {kind} {quote(name)}")

    def materialize_sql(
        self, name: str, sql: str, materialized: str, unique_key: Sequence[str] | None = None
    ) -> int | None:
        """Create a view or table from SQL, or merge into an incremental table.

        Returns:
            Rows in the resulting table (None for views).
        """
        merging = materialized == "incremental" and self.relations().get(name) == "table"
        try:
            return self._materialize_sql(name, sql, materialized, unique_key)
        except duckdb.Error as e:
            hint = (
                "\n  (merging into the existing table; if the model's columns changed, "
                "rebuild it with --full-refresh)"
                if merging
                else ""
            )
            raise ModelError(_message(e) + hint) from e

    def _materialize_sql(
        self, name: str, sql: str, materialized: str, unique_key: Sequence[str] | None
    ) -> int | None:
        existing = self.relations().get(name)
        if materialized == "view":
            if existing == "table":
                self.drop(name)
            self.con.execute(f"create or replace view {quote(name)} as\n{sql}")
            return None
        if materialized == "incremental" and existing == "table":
            self._merge(name, sql, unique_key or ())
        else:
            if existing == "view":
                self.drop(name)
            self.con.execute(f"create or replace table {quote(name)} as\n{sql}")
        return self.count(name)

    def _merge(self, name: str, sql: str, unique_key: Sequence[str]) -> None:
        self.con.execute(f"create or replace temp table __cpo_increment as\n{sql}")
        if unique_key:
            keys = ", ".join(quote(k) for k in unique_key)
            self.con.execute(
                f"delete from {quote(name)} where ({keys}) in "
                f"(select ({keys}) from __cpo_increment)"
            )
        self.con.execute(f"insert into {quote(name)} by name select * from __cpo_increment")
        self.con.execute("drop table __cpo_increment")

    def materialize_frame(self, name: str, frame: Any) -> int:
        """Store what a Python step returned (DataFrame, Arrow table or relation) as a table.

        Raises:
            ModelError: the value is not a table-like object, or DuckDB cannot store it.
        """
        if isinstance(frame, duckdb.DuckDBPyRelation):
            return self._materialize_relation(name, frame)
        if not (hasattr(frame, "columns") or hasattr(frame, "schema")):
            raise ModelError(
                "a Python step must return a pandas DataFrame, an Arrow table or a DuckDB "
                f"relation, not {type(frame).__name__}"
            )
        try:
            self.drop(name)
            self.con.register("__cpo_frame", frame)
            try:
                self.con.execute(f"create table {quote(name)} as select * from __cpo_frame")
            finally:
                self.con.unregister("__cpo_frame")
        except duckdb.Error as e:
            raise ModelError(_message(e)) from e
        return self.count(name)

    def _materialize_relation(self, name: str, relation: duckdb.DuckDBPyRelation) -> int:
        """Store a relation by running it inside DuckDB: no row passes through Python.

        A relation of another connection (e.g. ``duckdb.sql``) cannot be read here; it is
        fetched as Arrow instead.
        """
        view = "__cpo_relation"
        try:
            relation.create_view(view, replace=True)
            found = self._scalar("select count(*) from duckdb_views() where view_name = ?", [view])
        except duckdb.Error as e:
            raise ModelError(_message(e)) from e
        if not found:  # the view went to the relation's own connection
            return self.materialize_frame(name, relation.to_arrow_table())
        try:
            self.drop(name)
            self.con.execute(f"create table {quote(name)} as select * from {view}")
        except duckdb.Error as e:
            raise ModelError(_message(e)) from e
        finally:
            self.con.execute(f"drop view if exists {view}")
        return self.count(name)

    def load_seed(
        self,
        name: str,
        path: Path,
        *,
        column_types: Mapping[str, str],
        required_columns: Sequence[str],
        display_path: str,
    ) -> int:
        """Load a CSV or JSON(L) seed as a table; columns are VARCHAR unless typed.

        Raises:
            ModelError: a malformed row (with its line), a missing required column, a bad cast.
        """
        reader = seed_reader(path, display_path, name)
        try:
            columns = [r[0] for r in self.con.sql(f"describe select * from {reader}").fetchall()]
        except duckdb.Error as e:
            raise seed_error(e, display_path, name, path) from e
        check_seed_columns(name, display_path, columns, required_columns, column_types)
        select = ", ".join(
            f"cast({quote(c)} as {column_types[c]}) as {quote(c)}"
            if c in column_types
            else quote(c)
            for c in columns
        )
        try:
            self.drop(name)
            self.con.execute(f"create table {quote(name)} as select {select} from {reader}")
        except duckdb.Error as e:
            error = seed_error(e, display_path, name, path)
            if error.line is None and path.suffix == ".csv":
                error.line = self._bad_cast_line(reader, column_types)
            raise error from e
        rows = self.count(name)
        if rows == 0:
            raise ModelError(
                f"seed {name!r} has no rows (a header only, or an empty file): a build from it "
                "would publish empty tables. Add the data, or remove the file if it is not used.",
                path=display_path,
                node=name,
            )
        return rows

    def _bad_cast_line(self, reader: str, column_types: Mapping[str, str]) -> int | None:
        """The file line of the first value that a ``column_types`` cast rejects."""
        for column, kind in column_types.items():
            c = quote(column)
            try:
                row = self.con.execute(
                    f"select n from (select row_number() over () as n, {c} from {reader}) "
                    f"where {c} is not null and try_cast({c} as {kind}) is null order by n limit 1"
                ).fetchone()
            except duckdb.Error:
                return None
            if row:
                return int(row[0]) + 1  # the header is line 1
        return None


_CONVERT = re.compile(r"(Could not convert string )'.*?'(?= to \w)", re.DOTALL)


def _message(error: Exception) -> str:
    """DuckDB's message, without the data value a failed conversion quotes (it may be PII)."""
    return _CONVERT.sub(r"\1'…'", str(error).strip())


def check_no_writer(database: Path) -> None:
    """Refuse to go on while another process holds `database` open for writing.

    Raises:
        ModelError: a read-write DuckDB session (an analyst's, another tool's) has the file.
    """
    if not database.exists():
        return
    try:
        duckdb.connect(str(database), read_only=True).close()
    except duckdb.Error as e:
        text = str(e)
        if "different configuration" in text and not Path(f"{database}.wal").exists():
            return  # open in this very process (read-only, or written with nothing pending)
        if "lock" not in text.lower() and "different configuration" not in text:
            raise ModelError(f"cannot open database {database}: {text.strip()}") from e
        pid = re.search(r"PID (\d+)", text)
        holder = f" (pid {pid.group(1)})" if pid else ""
        raise ModelError(
            f"{database.name} is open for writing by another process{holder}: its changes "
            "would be replayed onto the new build. Close that session (analysts: connect with "
            f"read_only=True) and build again; {database.name} was left unchanged."
        ) from e


def _checkpoint(path: Path) -> None:
    """Fold ``<path>.wal`` into `path`, so the file alone is the whole database."""
    wal = Path(f"{path}.wal")
    if not wal.exists():
        return
    con = duckdb.connect(str(path))
    try:
        con.execute("checkpoint")
    finally:
        con.close()
    if wal.exists():
        raise ModelError(f"could not checkpoint {path.name}; the build was not published")


@contextlib.contextmanager
def atomic_database(
    database: Path, on_stale_wal: Callable[[Path], None] | None = None
) -> Iterator[tuple[Path, Callable[[], None]]]:
    """Yield a staging copy of `database` and a ``commit`` function that swaps it in.

    If ``commit`` is not called (a failure, an exception), the staging file is deleted and
    `database` is left exactly as it was. ``commit`` publishes exactly the staging database:
    it is checkpointed first (no WAL of its own), a session writing `database` makes the build
    stop with a clear error (before and after the build), a crashed session's WAL is moved
    aside (reported to `on_stale_wal`), and the old file's mode and owner are kept.

    Raises:
        ModelError: another process holds `database` open for writing.
    """
    remove_stale_staging(database)
    check_no_writer(database)
    staging = staging_path(database)
    staging.unlink(missing_ok=True)
    if database.exists():
        shutil.copyfile(database, staging)
    committed = False

    def commit() -> None:
        nonlocal committed
        _checkpoint(staging)
        check_no_writer(database)
        aside = set_aside_stale_wal(database)
        if aside and on_stale_wal:
            on_stale_wal(aside)
        if database.exists():
            keep_permissions(database, staging)
        os.replace(staging, database)
        committed = True

    try:
        yield staging, commit
    finally:
        if not committed:
            staging.unlink(missing_ok=True)
        Path(f"{staging}.wal").unlink(missing_ok=True)

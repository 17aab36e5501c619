"""The only engine module that talks to DuckDB: connect, load seeds, materialise, swap atomically.

A build never writes ``cpo.duckdb`` in place: it copies it to a staging file beside it, builds
there, and renames the staging file over ``cpo.duckdb`` only when everything succeeded. A rename
is atomic on POSIX, so a failed or killed build leaves the old file byte-identical, and readers
holding the old file open keep reading the old inode undisturbed.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cpo.compile import quote
from cpo.errors import ModelError

STAGING_MARK = ".building-"


@dataclass(frozen=True)
class SqlFunction:
    """A scalar Python function callable from SQL (declared in ``udfs/`` with `cpo.udf`)."""

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
        self.con.create_function(
            fn.name,
            fn.function,
            [duckdb.sqltype(p) for p in fn.parameters],
            duckdb.sqltype(fn.return_type),
            type="arrow" if fn.vectorized else "native",
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
            raise ModelError(str(e).strip()) from e

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run a query and return (column names, rows)."""
        cursor = self.execute(sql, params)
        return [d[0] for d in cursor.description or []], cursor.fetchall()

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
        return int(self.con.execute(f"select count(*) from {quote(name)}").fetchone()[0])

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
            raise ModelError(str(e).strip() + hint) from e

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
            frame = frame.to_arrow_table()  # .arrow() is a one-shot reader in 1.5
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
            raise ModelError(str(e).strip()) from e
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
        reader = _seed_reader(path, display_path, name)
        try:
            columns = [r[0] for r in self.con.sql(f"describe select * from {reader}").fetchall()]
        except duckdb.Error as e:
            raise _seed_error(e, display_path, name) from e
        missing = [c for c in required_columns if c not in columns]
        if missing:
            raise ModelError(
                f"seed {name!r} is missing required column(s) {', '.join(missing)}; "
                f"it has: {', '.join(columns)}",
                path=display_path,
                line=1,
                node=name,
            )
        unknown = [c for c in column_types if c not in columns]
        if unknown:
            raise ModelError(
                f"column_types names unknown column(s) {', '.join(unknown)}",
                path=display_path,
                node=name,
            )
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
            error = _seed_error(e, display_path, name)
            if error.line is None and path.suffix == ".csv":
                error.line = self._bad_cast_line(reader, column_types)
            raise error from e
        return self.count(name)

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


def _seed_reader(path: Path, display_path: str, name: str) -> str:
    literal = _literal(str(path))
    if path.suffix == ".csv":
        # Columns come from the header, so DuckDB does not sniff the dialect: sniffing fails on
        # a malformed row without saying which, while a fixed dialect reports the line.
        columns = ", ".join(
            f"{_literal(c)}: 'VARCHAR'" for c in _csv_header(path, display_path, name)
        )
        return (
            f"read_csv({literal}, header = true, auto_detect = false, delim = ',', "
            f"quote = '\"', escape = '\"', strict_mode = true, columns = {{{columns}}})"
        )
    if path.suffix == ".json":
        return f"read_json_auto({literal})"
    return f"read_json_auto({literal}, format = 'newline_delimited')"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _csv_header(path: Path, display_path: str, name: str) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), [])
    except UnicodeDecodeError:
        from cpo.yamlfile import decode_utf8

        decode_utf8(path.read_bytes(), display_path)  # raises, naming the byte's real line
        raise
    except (OSError, csv.Error) as e:
        raise ModelError(
            f"cannot read seed {name!r}: {e}", path=display_path, line=1, node=name
        ) from e
    if not header or any(not c.strip() for c in header) or len(set(header)) != len(header):
        raise ModelError(
            f"seed {name!r} needs a header row of distinct, non-empty column names; found {header}",
            path=display_path,
            line=1,
            node=name,
        )
    return header


def _seed_error(error: Exception, display_path: str, name: str) -> ModelError:
    text = str(error).strip()
    match = re.search(r"[Ll]ine:?\s*(\d+)", text)
    # DuckDB's message, without its generic list of reader options and "possible fixes".
    kept = [line.strip() for line in text.split("Possible fixes")[0].splitlines() if line.strip()]
    detail = "; ".join(kept)[:400].rstrip(".") or type(error).__name__
    return ModelError(
        f"cannot load seed {name!r}: {detail}. Fix the file and rebuild.",
        path=display_path,
        line=int(match.group(1)) if match else None,
        node=name,
    )


def staging_path(database: Path) -> Path:
    """The staging file a build of `database` writes into."""
    return database.with_name(f".{database.name}{STAGING_MARK}{os.getpid()}")


def remove_stale_staging(database: Path) -> list[Path]:
    """Delete staging files left by builds that were killed (their process is gone)."""
    removed = []
    for path in database.parent.glob(f".{database.name}{STAGING_MARK}*"):
        pid = path.name.rsplit(STAGING_MARK, 1)[-1].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            Path(f"{path}.wal").unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_database(database: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """Yield a staging copy of `database` and a ``commit`` function that swaps it in.

    If ``commit`` is not called (a failure, an exception), the staging file is deleted and
    `database` is left exactly as it was.
    """
    remove_stale_staging(database)
    staging = staging_path(database)
    staging.unlink(missing_ok=True)
    if database.exists():
        shutil.copyfile(database, staging)
    committed = False

    def commit() -> None:
        nonlocal committed
        os.replace(staging, database)
        committed = True

    try:
        yield staging, commit
    finally:
        if not committed:
            staging.unlink(missing_ok=True)
        Path(f"{staging}.wal").unlink(missing_ok=True)

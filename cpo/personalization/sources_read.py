"""Reading a source: the FROM clause for a file, a glob or a table of another DuckDB file.

Every check opens its own in-memory DuckDB connection (through `cpo.adapters.duckdb`); a table
of a DuckDB file is read through a read-only ``ATTACH``, which a build runs on its own
connection (`cpo.personalization.sources.attach_sources`).
"""

from __future__ import annotations

import glob as globlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cpo.errors import ConfigurationError, ModelError
from cpo.personalization.sources_spec import (
    CONFIG_FILE,
    IDENTIFIER,
    SourceSpec,
    error_at,
    first_line,
    quote,
    sql_string,
)


def relation_of(root: Path, spec: SourceSpec, key: str) -> tuple[str, str | None]:
    """The FROM clause that reads the source, and the ATTACH it needs (None for files)."""
    path = Path(spec.path)
    full = path if path.is_absolute() else root / path
    pattern = str(full)
    matches = sorted(globlib.glob(pattern)) if globlib.has_magic(pattern) else []
    if globlib.has_magic(pattern) and not matches:
        raise error_at(root, f"{key}.path", f"no file matches {spec.path!r}; fix the path or glob")
    if not globlib.has_magic(pattern) and not full.is_file():
        raise error_at(
            root,
            f"{key}.path",
            f"{spec.path!r} does not exist (paths are relative to the project folder)",
        )
    if all(Path(f).stat().st_size == 0 for f in (matches or [pattern])):
        raise error_at(
            root,
            f"{key}.path",
            f"{spec.path!r} is empty; a build needs a header and at least one row",
        )
    fmt = spec.format or format_of(matches[0] if matches else pattern)
    if fmt is None:
        raise error_at(
            root,
            f"{key}.path",
            f"cannot tell the format of {spec.path!r} from its name; add "
            f"'format: csv' (or parquet, json, duckdb) under {key}",
        )
    if spec.table is not None and fmt != "duckdb":
        raise error_at(
            root,
            f"{key}.table",
            f"'table' names a table of a DuckDB file, but {spec.path!r} is read as {fmt}; "
            f"remove 'table', or point path at a .duckdb file (or add 'format: duckdb')",
        )
    literal = sql_string(pattern)
    if fmt == "csv":
        return f"read_csv({literal}, header = true, union_by_name = true)", None
    if fmt == "parquet":
        return f"read_parquet({literal}, union_by_name = true)", None
    if fmt == "json":
        return f"read_json_auto({literal})", None
    return _duckdb_table(root, spec, key, full)


def _duckdb_table(root: Path, spec: SourceSpec, key: str, full: Path) -> tuple[str, str]:
    """``<alias>.<schema>.<table>`` of a DuckDB file attached read-only, and its ATTACH."""
    from cpo.engine.compile import sql_identifier

    if globlib.has_magic(str(full)):
        raise error_at(root, f"{key}.path", "a DuckDB source is one file, not a glob")
    if full.resolve() in _own_databases(root):
        raise error_at(
            root,
            f"{key}.path",
            f"{spec.path!r} is this project's own database: every build replaces it, so it "
            "cannot also be an input. Keep your customers in another DuckDB file (or a "
            "CSV/Parquet file) and point path at that",
        )
    parts = (spec.table or "").split(".")
    if not spec.table or len(parts) > 2 or not all(IDENTIFIER.match(p) for p in parts):
        raise error_at(
            root,
            f"{key}.table",
            f"reading {spec.path!r} needs the table to read: add 'table: <name>' (or "
            f"'table: <schema>.<name>') under {key}; the file's tables are: "
            + (tables_text(duckdb_tables(root, full, key, spec.path)) or "none"),
        )
    schema, table = parts if len(parts) == 2 else ("main", parts[0])
    tables = duckdb_tables(root, full, key, spec.path)
    match = next(
        ((s, t) for s, t in tables if s.lower() == schema.lower() and t.lower() == table.lower()),
        None,
    )
    if match is None:
        raise error_at(
            root,
            f"{key}.table",
            f"{spec.path!r} has no table {spec.table!r}; its tables are: "
            + (tables_text(tables) or "none (the file is empty)"),
        )
    alias = _ALIAS + spec_name(key)
    attach = f"attach {sql_string(str(full))} as {sql_identifier(alias)} (read_only)"
    relation = ".".join(quote(p) for p in (alias, *match))
    return relation, attach


_ALIAS = "cpo_source_"


def spec_name(key: str) -> str:
    """``customers`` from ``sources.customers``."""
    return key.rsplit(".", 1)[-1]


def _own_databases(root: Path) -> set[Path]:
    """The project's own built databases (``cpo.duckdb`` and every target's ``database``)."""
    paths = {(root / "cpo.duckdb").resolve()}
    try:
        data = yaml.safe_load((root / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return paths
    targets = data.get("targets") if isinstance(data, Mapping) else None
    for target in (targets or {}).values() if isinstance(targets, Mapping) else ():
        database = target.get("database") if isinstance(target, Mapping) else None
        if isinstance(database, str) and database:
            paths.add((root / database).resolve())
    return paths


def duckdb_tables(root: Path, full: Path, key: str, shown: str) -> list[tuple[str, str]]:
    """(schema, name) of the tables and views in a DuckDB file; errors name ``<key>.path``."""
    try:
        return list_tables(full, shown)
    except ConfigurationError as e:
        raise error_at(root, f"{key}.path", e.message) from None


def list_tables(full: Path, shown: str) -> list[tuple[str, str]]:
    """(schema, name) of the tables and views in a DuckDB file, opened read-only.

    Raises:
        ConfigurationError: the file is locked by a writer or is not a DuckDB database.
    """
    from cpo.adapters.duckdb import Database  # the one module that talks to DuckDB

    try:
        con = Database(full, read_only=True)
    except ModelError as e:
        text = first_line(e)
        if "lock" in text.lower():
            why = "another program has it open for writing; close that program (or copy the file)"
        else:
            why = f"it is not a DuckDB database this version can read ({text})"
        raise ConfigurationError(f"cannot open {shown!r}: {why}") from None
    try:
        _, rows = con.fetch(
            "select schema_name, table_name from duckdb_tables() where database_name = "
            "current_database() union all select schema_name, view_name from duckdb_views() "
            "where database_name = current_database() and not internal order by 1, 2"
        )
    finally:
        con.close()
    return [(str(s), str(t)) for s, t in rows]


def describe_duckdb_table(
    full: Path, shown: str, table: str | None
) -> tuple[str, list[tuple[str, str]]]:
    """The table to read from a DuckDB file (`table`, or its only one) and its columns.

    Returns:
        (name, columns): the table as ``table:`` takes it (``name`` or ``schema.name``) and its
        (column, type) pairs.

    Raises:
        ConfigurationError: no such table, or several and none chosen (listing them).
    """
    from cpo.engine.compile import sql_identifier

    tables = list_tables(full, shown)
    if not tables:
        raise ConfigurationError(f"{shown!r} has no tables or views to read customers from")
    if table is None:
        if len(tables) > 1:
            raise ConfigurationError(
                f"{shown!r} has {len(tables)} tables: {tables_text(tables)}; choose one with "
                "--table NAME"
            )
        found: tuple[str, str] | None = tables[0]
    else:
        schema, _, name = table.rpartition(".")
        found = next(
            (
                (s, t)
                for s, t in tables
                if t.lower() == name.lower() and s.lower() == (schema or "main").lower()
            ),
            None,
        )
    if found is None:
        raise ConfigurationError(
            f"{shown!r} has no table {table!r}; its tables are: {tables_text(tables)}"
        )
    alias = _ALIAS + "init"
    con = connection(f"attach {sql_string(str(full))} as {sql_identifier(alias)} (read_only)")
    try:
        relation = ".".join(quote(p) for p in (alias, *found))
        columns = describe_relation(con, relation)
    finally:
        con.close()
    return tables_text([found]), columns


def tables_text(tables: list[tuple[str, str]]) -> str:
    """``name`` (``schema.name`` outside ``main``) of each table, comma-separated."""
    return ", ".join(t if s == "main" else f"{s}.{t}" for s, t in tables)


def is_duckdb_spec(spec: SourceSpec) -> bool:
    """Whether `spec` reads a table of a DuckDB file (which a build attaches)."""
    return spec.format == "duckdb" or format_of(spec.path) == "duckdb"


def format_of(path: str) -> str | None:
    name = path.lower()
    for suffix, fmt in (
        (".csv", "csv"),
        (".csv.gz", "csv"),
        (".tsv", "csv"),
        (".txt", "csv"),
        (".parquet", "parquet"),
        (".json", "json"),
        (".jsonl", "json"),
        (".ndjson", "json"),
        (".duckdb", "duckdb"),
        (".db", "duckdb"),
    ):
        if name.endswith(suffix):
            return fmt
    return None


def _check_utf8(root: Path, shown: str) -> None:
    """Raise naming the first non-UTF-8 byte (file:line: column) of the CSV files of `shown`."""
    from cpo.engine.yamlfile import decode_utf8

    for path in sorted(root.glob(shown)) if not Path(shown).is_absolute() else [Path(shown)]:
        if path.suffix.lower() in (".csv", ".tsv", ".txt") and path.is_file():
            decode_utf8(path.read_bytes(), shown if "*" not in shown else str(path.name))


def connection(attach: str | None = None) -> Any:
    """An in-memory DuckDB connection (`cpo.adapters.duckdb.Database`), `attach` run on it."""
    from cpo.adapters.duckdb import Database  # the one module that talks to DuckDB

    db = Database(":memory:")
    if attach:
        db.execute(attach)
    return db


def describe(
    root: Path, relation: str, key: str, shown: str, attach: str | None = None
) -> list[tuple[str, str]]:
    """(column, type) of a source's relation; errors name ``<key>.path``."""
    try:
        con = connection(attach)
    except ModelError as e:
        raise error_at(root, f"{key}.path", f"cannot read {shown!r}: {first_line(e)}") from None
    try:
        columns = describe_relation(con, relation)
    except ModelError as e:
        _check_utf8(root, shown)  # a bad byte is named with its file, line and column
        raise error_at(root, f"{key}.path", f"cannot read {shown!r}: {first_line(e)}") from None
    finally:
        con.close()
    if not columns:
        raise error_at(root, f"{key}.path", f"{shown!r} has no columns; is it empty?")
    return columns


def describe_relation(con: Any, relation: str) -> list[tuple[str, str]]:
    """(column, type) of `relation` on connection `con`."""
    rows = con.execute(f"describe select * from {relation}").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]

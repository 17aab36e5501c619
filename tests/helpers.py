"""Helpers shared by the tests: the one way a test reads a built project's database."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def database_path(target: Path) -> Path:
    """The DuckDB file of `target`: the file itself, or a project folder's only ``*.duckdb``.

    A project folder with ``cpo.duckdb`` uses it; the fixtures' projects (``mini.duckdb``,
    ``experiment.duckdb``) have one database each.
    """
    target = Path(target)
    if not target.is_dir():
        return target
    if (target / "cpo.duckdb").exists():
        return target / "cpo.duckdb"
    found = sorted(target.glob("*.duckdb"))
    assert len(found) == 1, f"expected one database in {target}, found {found}"
    return found[0]


@contextmanager
def read_only(target: Path) -> Iterator[Any]:
    """Open `target`'s database read-only through the project's own adapter; close it after."""
    from cpo.adapters.duckdb import Database

    database = Database(database_path(target), read_only=True)
    try:
        yield database
    finally:
        database.close()


def query(target: Path, sql: str, params: Sequence[Any] | None = None) -> Any:
    """Run `sql` on a built project's database (read-only) and return a pandas DataFrame."""
    with read_only(target) as database:
        return database.execute(sql, list(params or [])).df()


def query_rows(target: Path, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
    """Run `sql` on a built project's database (read-only) and return its rows as tuples."""
    with read_only(target) as database:
        return database.fetch(sql, list(params or []))[1]


def replace_in(path: Path, old: str, new: str, count: int = -1) -> str:
    """Replace `old` by `new` in a UTF-8 file (a project's cpo.yml, a model); return the text
    it had, to restore or to find lines in. `old` must be there: a test never edits nothing."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")
    return text

"""What the engine needs from a database adapter (DuckDB's `cpo.adapters.duckdb.Database`, Spark's
adapter)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class Cursor(Protocol):
    """The result of `Adapter.execute`."""

    description: Any

    def fetchone(self) -> tuple | None:
        """The next row."""

    def fetchall(self) -> list[tuple]:
        """Every remaining row."""


class Adapter(Protocol):
    """A database the runner, the steps and the Project API build into and read from.

    SQL it receives is DuckDB's dialect (the models' own); an adapter for another engine
    translates it.
    """

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        """Run a statement; return a cursor (``fetchone``/``fetchall``)."""

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run a query: (column names, rows)."""

    def relation(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """A lazy relation of the engine (what Python steps get from ``ctx.ref``/``ctx.sql``)."""

    def relations(self) -> dict[str, str]:
        """Existing relations: name -> ``table`` or ``view``."""

    def count(self, name: str) -> int:
        """Row count of a relation."""

    def columns(self, name: str) -> list[tuple[str, str]]:
        """(column, type) pairs of a relation."""

    def drop(self, name: str) -> None:
        """Drop a table or view, whichever exists."""

    def materialize_sql(
        self, name: str, sql: str, materialized: str, unique_key: Sequence[str] | None = None
    ) -> int | None:
        """Create a view or table from SQL, or merge into an incremental table."""

    def materialize_frame(self, name: str, frame: Any) -> int:
        """Store what a Python step returned as a table."""

    def load_seed(
        self,
        name: str,
        path: Path,
        *,
        column_types: Mapping[str, str],
        required_columns: Sequence[str],
        display_path: str,
    ) -> int:
        """Load a CSV or JSON(L) seed as a table."""

    def close(self) -> None:
        """Release the connection."""

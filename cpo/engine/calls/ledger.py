"""The call ledger: one row per provider call (generation, search, safety, index builds).

Kept in the ``provider_calls`` table of the call store with every build's history; each build
copies it into the built database as ``provider_calls``, with ``llm_calls`` as a view over it
(the table's name before it also recorded search and safety calls; same columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpo.engine.calls.store import SharedConnection

LEDGER_TABLE = "provider_calls"
LEDGER_VIEW = "llm_calls"
"""The ledger's former name, kept as a view over `LEDGER_TABLE` for compatibility."""
LEDGER_COLUMNS = (
    "run_id",
    "step",
    "provider",
    "model",
    "item_key",
    "cache_hit",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "status",
    "attempts",
    "error",
    "called_at",
)
LEDGER_SCHEMA = """
create table if not exists provider_calls (
    run_id text, step text, provider text, model text, item_key text, cache_hit integer,
    input_tokens integer, output_tokens integer, cost_usd real, latency_ms real,
    status text, attempts integer, error text, called_at text
);
create view if not exists llm_calls as select * from provider_calls;
"""


class CallLedger:
    """Appends and reads ledger rows (safe to use from several threads).

    A store written by an older CPO has the ledger as a table named ``llm_calls``: it is renamed
    to ``provider_calls`` on open, keeping its history.

    Args:
        db: The call store's connection.
    """

    def __init__(self, db: SharedConnection) -> None:
        self._db = db
        with db.use() as con:
            kinds = dict(
                con.execute(
                    "select name, type from sqlite_master where name in (?, ?)",
                    (LEDGER_TABLE, LEDGER_VIEW),
                ).fetchall()
            )
            if kinds.get(LEDGER_VIEW) == "table" and LEDGER_TABLE not in kinds:
                con.execute(f"alter table {LEDGER_VIEW} rename to {LEDGER_TABLE}")
            con.executescript(LEDGER_SCHEMA)

    def record(self, row: Mapping[str, Any]) -> None:
        """Append one row (columns missing from `row` are NULL)."""
        with self._db.use() as con:
            con.execute(
                f"insert into {LEDGER_TABLE} values ({', '.join('?' * len(LEDGER_COLUMNS))})",
                tuple(row.get(c) for c in LEDGER_COLUMNS),
            )

    def rows(self) -> list[tuple[Any, ...]]:
        """Every row, oldest first, in `LEDGER_COLUMNS` order."""
        with self._db.use() as con:
            return con.execute(
                f"select {', '.join(LEDGER_COLUMNS)} from {LEDGER_TABLE} order by rowid"
            ).fetchall()

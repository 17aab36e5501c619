"""The response cache: each answer a provider gave, keyed by everything that shapes it.

Answers are stored as JSON (each result type's `to_cache`, see `cpo.providers.base.ProviderKind`)
in the ``cache`` table of the call store (`cpo.engine.calls.store`), written as each call returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpo.engine.calls.store import SharedConnection

CACHE_SCHEMA = """
create table if not exists cache (
    key text primary key, provider text, model text, value text, created_at text
);
"""


class ResponseCache:
    """Cached provider answers (safe to use from several threads).

    Args:
        db: The call store's connection.
    """

    def __init__(self, db: SharedConnection) -> None:
        self._db = db
        with db.use() as con:
            con.executescript(CACHE_SCHEMA)

    def get(self, key: str) -> Any | None:
        """The cached JSON value for a key, or None."""
        with self._db.use() as con:
            row = con.execute("select value from cache where key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, provider: str, model: str, value: Any) -> None:
        """Store a value at once (so a killed build keeps what it paid for)."""
        with self._db.use() as con:
            con.execute(
                "insert or replace into cache values (?, ?, ?, ?, ?)",
                (key, provider, model, json.dumps(value), now()),
            )


def cache_key(provider_description: Mapping[str, Any], method: str, request: Any, salt: str) -> str:
    """Hash of (provider, model, rendered prompt, parameters): equal keys give equal answers."""
    payload = {
        "provider": provider_description,
        "method": method,
        "request": _jsonable({k: v for k, v in dataclasses.asdict(request).items() if k != "key"}),
        "salt": salt,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def now() -> str:
    """The current UTC time as ISO 8601 with milliseconds (cache and ledger timestamps)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")

"""The call store: one SQLite file outside the built database (``.cpo/cache.sqlite``).

It holds the response cache (`ResponseCache`) and the call ledger (`CallLedger`), both written
as each call returns, so what a failed or killed build paid for is kept and never paid again.
Both use the file through one `SharedConnection`, so calls on several threads take turns.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from cpo.engine.calls.cache import ResponseCache
from cpo.engine.calls.ledger import CallLedger


class SharedConnection:
    """One SQLite connection used by several threads, each use under one lock.

    Args:
        path: The file (created with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._con.execute("pragma journal_mode=wal")

    @contextlib.contextmanager
    def use(self) -> Iterator[sqlite3.Connection]:
        """The connection, held for this thread until the ``with`` block ends."""
        with self._lock:
            yield self._con

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._con.close()


class CallStore:
    """The SQLite file of the response cache and the call ledger.

    Args:
        path: The file (created with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        self._db = SharedConnection(path)
        self.cache = ResponseCache(self._db)
        self.ledger = CallLedger(self._db)

    def close(self) -> None:
        """Close the SQLite connection."""
        self._db.close()

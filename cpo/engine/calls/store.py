"""The call store: one SQLite file outside the built database (``.cpo/cache.sqlite``).

It holds the response cache (`ResponseCache`) and the call ledger (`CallLedger`), both written
as each call returns, so what a failed or killed build paid for is kept and never paid again.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from cpo.engine.calls.cache import ResponseCache
from cpo.engine.calls.ledger import CallLedger


class CallStore:
    """The SQLite file of the response cache and the call ledger.

    Args:
        path: The file (created with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._con.execute("pragma journal_mode=wal")
        self.cache = ResponseCache(self._con, self._lock)
        self.ledger = CallLedger(self._con, self._lock)

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._con.close()

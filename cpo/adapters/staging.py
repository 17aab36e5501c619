"""Staging files of a DuckDB build beside the database, with no database connection.

Where a build's staging copy lives (`staging_path`), clearing the copies of builds that were
killed, setting a crashed session's WAL aside, and giving the new file the old one's mode.
`cpo.adapters.duckdb.atomic_database` puts them together; the Spark warehouse shares the
liveness check (`process_alive`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

STAGING_MARK = ".building-"


def staging_path(database: Path) -> Path:
    """The staging file a build of `database` writes into."""
    return database.with_name(f".{database.name}{STAGING_MARK}{os.getpid()}")


def remove_stale_staging(database: Path) -> list[Path]:
    """Delete staging files left by builds that were killed (their process is gone)."""
    removed = []
    for path in database.parent.glob(f".{database.name}{STAGING_MARK}*"):
        pid = path.name.rsplit(STAGING_MARK, 1)[-1].split(".")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)
            Path(f"{path}.wal").unlink(missing_ok=True)
            removed.append(path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (this process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def set_aside_stale_wal(database: Path) -> Path | None:
    """Move a WAL that no process is writing (a crashed session's) away from `database`.

    DuckDB replays ``<database>.wal`` onto whatever file is at ``<database>`` when it is next
    opened, so a foreign WAL left beside a freshly swapped-in build would re-apply the old
    session's changes to it. The WAL is kept (renamed), not deleted.

    Returns:
        The WAL's new path, or None when there was none.
    """
    wal = Path(f"{database}.wal")
    if not wal.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = wal.with_name(f"{wal.name}.stale-{stamp}-{os.getpid()}")
    os.replace(wal, aside)
    return aside


def keep_permissions(source: Path, destination: Path) -> None:
    """Give `destination` the mode (and, when allowed, the owner) of `source`."""
    st = source.stat()
    os.chmod(destination, stat.S_IMODE(st.st_mode))
    if (st.st_uid, st.st_gid) != (destination.stat().st_uid, destination.stat().st_gid):
        with contextlib.suppress(OSError):  # only root (or the owner's group) may chown
            os.chown(destination, st.st_uid, st.st_gid)

"""The project's lock: one command at a time writes a project."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cpo.errors import CPOError

LOCK_FILE = Path(".cpo") / "lock"


@contextlib.contextmanager
def project_lock(root: Path, command: str) -> Iterator[None]:
    """Hold the project's lock (``.cpo/lock``) for a command that writes the project.

    ``build``, ``run``, ``seed`` and ``clean`` take it: a second one fails at once, naming the
    process that holds it, instead of waiting or interleaving. The lock is an OS lock
    (``flock``) on an open file, so it is released when its process ends, even by ``kill -9``.

    Raises:
        CPOError: another process holds the lock, or the lock file cannot be created.
    """
    path = root / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CPOError(
            f"cannot create the project lock {LOCK_FILE}: {e.strerror or e}; "
            f"'{command}' needs a writable project folder"
        ) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode("utf-8", "replace").split()
            pid = holder[0] if holder else "unknown"
            other = holder[1] if len(holder) > 1 else "build"
            raise CPOError(
                f"another build (pid {pid}, '{other}') is running in this project; wait for "
                f"it to finish (or stop it) and run '{command}' again. Nothing was changed."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock

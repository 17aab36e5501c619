"""Where the verbs may write: the paths no output may replace, and "cannot write" as a clear error.

`writes_files` wraps a `Project` verb so that a read-only folder, a full disk or a denied
permission becomes a `CPOError` saying what to do; `output_path` checks an ``--out`` option
against `protected_paths` (the database, ``cpo.yml``, the project's inputs).
"""

from __future__ import annotations

import errno
import functools
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from cpo.adapters import spark_settings, target_type
from cpo.engine.config import ProjectConfig
from cpo.errors import CPOError, UsageError

_CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
P = ParamSpec("P")
R = TypeVar("R")


def writes_files(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """Turn "cannot write" OS errors of a verb into a `CPOError` that says what to do."""

    @functools.wraps(method)
    def wrapper(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except (OSError, sqlite3.OperationalError) as e:
            if isinstance(e, OSError) and e.errno not in _CANNOT_WRITE:
                raise
            if isinstance(e, sqlite3.OperationalError) and not re.search(
                r"readonly|unable to open", str(e)
            ):
                raise
            where = getattr(e, "filename", None) or ""
            reason = getattr(e, "strerror", None) or str(e)
            raise CPOError(
                f"cannot write {where or 'to the project folder'}: {reason}. "
                f"'{method.__name__}' writes under {self.config.root}; make it writable "
                "(or work on a copy)."
            ) from e

    return wrapper


def protected_paths(config: ProjectConfig) -> list[Path]:
    """What no output may replace: the database (and its WAL), ``cpo.yml``, the inputs."""
    database = config.database_path
    inputs = [config.path(k) for k in ("seeds", "models", "udfs", "prompts")]
    inputs.append(config.path("data_tests"))
    if target_type(config) == "spark":  # the Spark target's tables
        inputs.append(spark_settings(config).warehouse_path)
    return [
        database,
        database.with_name(f"{database.name}.wal"),
        config.root / "cpo.yml",
        config.root / ".cpo",
        config.root / config.cache_path,
        *inputs,
    ]


def output_path(config: ProjectConfig, out: Path, option: str) -> Path:
    """`out` resolved, or a UsageError when it is or lies inside a protected path."""
    path = (out if out.is_absolute() else Path.cwd() / out).resolve()
    for protected in protected_paths(config):
        protected = protected.resolve()
        if path == protected or path.is_relative_to(protected):
            what = (
                "the project's database"
                if protected.name.startswith(config.database_path.name)
                else f"a project input ({protected.relative_to(config.root)})"
                if protected.is_relative_to(config.root)
                else str(protected)
            )
            raise UsageError(
                f"{option} {out} would write onto {what}; choose another path "
                "(--force does not allow this)"
            )
    return path


def looks_like_html(path: Path) -> bool:
    """Whether the file at `path` starts like an HTML page (one ``report --out`` may replace)."""
    try:
        with path.open("rb") as f:
            head = f.read(512).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html"))

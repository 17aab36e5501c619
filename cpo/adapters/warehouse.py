"""The Spark target's storage: versioned folders of Parquet tables, published by one rename.

Layout under ``<warehouse>/<schema>/``::

    CURRENT                  the name of the published version (one line)
    v-<time>-<pid>/          a version: one Parquet folder per table, _views/<name>.sql
    .building-<pid>-<id>/    a build in progress (deleted when the build fails or dies)

A build starts from hard links of the published version's files (Parquet files are never
modified in place: a table is rewritten into a new folder and renamed), builds there, and
publishes by renaming the folder to a version and replacing ``CURRENT`` with ``os.replace``,
which is atomic. A failed or killed build never touches ``CURRENT`` nor the published files.
No pyspark here: `relations` of a version are read from the folders.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cpo.adapters.staging import process_alive  # one liveness check for stale staging copies

POINTER = "CURRENT"
BUILDING = ".building-"
VIEWS = "_views"
KEEP_VERSIONS = 2  # the published one and the one before (readers may still be on it)


def schema_dir(settings: Any) -> Path:
    """``<warehouse>/<schema>``."""
    return settings.warehouse_path / settings.schema


def current_version(settings: Any) -> Path | None:
    """The published version's folder, or None before the first successful build."""
    base = schema_dir(settings)
    try:
        name = (base / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path = base / name
    return path if name and path.is_dir() else None


def relations(version: Path | None) -> dict[str, str]:
    """Tables and views of a version folder: name -> ``table`` or ``view``."""
    if version is None or not version.is_dir():
        return {}
    found: dict[str, str] = {}
    for child in sorted(version.iterdir()):
        if child.is_dir() and not child.name.startswith(("_", ".")):
            found[child.name] = "table"
    views = version / VIEWS
    if views.is_dir():
        for sql in sorted(views.glob("*.sql")):
            found[sql.stem] = "view"
    return found


def _link_tree(source: Path, target: Path) -> None:
    """Copy a folder tree by hard links (copies where the filesystem has none)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def remove_stale(settings: Any) -> list[Path]:
    """Delete build folders of processes that are gone, and versions older than the kept ones."""
    base = schema_dir(settings)
    removed: list[Path] = []
    if not base.is_dir():
        return removed
    for path in base.glob(f"{BUILDING}*"):
        pid = path.name[len(BUILDING) :].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    current = current_version(settings)
    versions = sorted(
        (p for p in base.glob("v-*") if p.is_dir()), key=lambda p: p.name, reverse=True
    )
    keep = {current} | set(versions[:KEEP_VERSIONS])
    for path in versions:
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_version(settings: Any) -> Iterator[tuple[Path, Callable[[], None]]]:
    """Yield a staging version folder and a ``commit`` that publishes it.

    Without ``commit`` (a failure, an exception) the folder is deleted and ``CURRENT`` and the
    published files are left exactly as they were.
    """
    base = schema_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    remove_stale(settings)
    staging = base / f"{BUILDING}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    current = current_version(settings)
    if current is not None:
        _link_tree(current, staging)
    else:
        staging.mkdir()
    committed = False

    def commit() -> None:
        nonlocal committed
        version = base / f"v-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}"
        os.rename(staging, version)
        pointer = base / f".{POINTER}.{os.getpid()}"
        pointer.write_text(version.name + "\n", encoding="utf-8")
        os.replace(pointer, base / POINTER)  # the atomic step: readers see old or new
        committed = True
        remove_stale(settings)

    try:
        yield staging, commit
    finally:
        if not committed:
            shutil.rmtree(staging, ignore_errors=True)

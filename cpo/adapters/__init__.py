"""Database adapters: DuckDB (the default, `cpo.adapters.duckdb`) or Apache Spark
(`cpo.adapters.spark`).

A target chooses its engine with ``type:`` in ``cpo.yml``::

    targets:
      offline: {database: cpo.duckdb}                      # type: duckdb (default)
      spark:
        type: spark
        master: local[2]               # or remote: sc://host:15002 (Spark Connect)
        warehouse: spark-warehouse     # where tables are written (path or URI)
        schema: cpo                    # the folder under warehouse (and, with catalog, the
        catalog: spark_catalog         #   schema of that catalog the build is published into)
        conf: {spark.driver.memory: 2g}

`open_adapter` opens the target's database; `atomic_build` yields a staging database and a
``commit`` that publishes it only when called (a failed build leaves the published tables as
they were). Nothing here imports pyspark: only `cpo.adapters.spark` does, when a Spark target
is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SparkSettings:
    """A validated ``type: spark`` target."""

    root: Path
    master: str | None = "local[2]"
    remote: str | None = None
    warehouse: str = "spark-warehouse"
    schema: str = "cpo"
    catalog: str | None = None
    conf: Mapping[str, str] = field(default_factory=dict)
    shuffle_partitions: int = 8

    @property
    def warehouse_path(self) -> Path:
        """The warehouse folder (relative paths are under the project root)."""
        path = Path(self.warehouse)
        return path if path.is_absolute() else self.root / path


def target_type(config: Any) -> str:
    """``duckdb`` or ``spark``: the engine of the project's active target."""
    return str(getattr(config.target, "type", "duckdb"))


def spark_settings(config: Any) -> SparkSettings:
    """The Spark settings of the active target (validated with the rest of ``cpo.yml`` by
    `cpo.engine.config_schema.TargetSettings`), with their defaults."""
    given = dict(getattr(config.target, "engine", None) or {})
    if given.get("remote"):
        given["master"] = None
    given["conf"] = {str(k): str(v) for k, v in (given.get("conf") or {}).items()}
    return SparkSettings(root=Path(config.root), **given)


def database_exists(config: Any) -> bool:
    """Whether the active target has a published database to read."""
    if target_type(config) == "spark":
        from cpo.adapters.warehouse import current_version

        return current_version(spark_settings(config)) is not None
    return Path(config.database_path).exists()


def database_modified(config: Any) -> float | None:
    """When the active target's published database was last written (POSIX time), or None."""
    path = Path(config.database_path)
    if target_type(config) == "spark":
        from cpo.adapters.warehouse import POINTER, current_version, schema_dir

        settings = spark_settings(config)
        if current_version(settings) is None:
            return None
        path = schema_dir(settings) / POINTER
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def open_adapter(
    config: Any,
    path: Path | str | None = None,
    *,
    read_only: bool = False,
    functions: Sequence[Any] = (),
) -> Any:
    """Open the active target's database: DuckDB's `Database` or the Spark adapter.

    Args:
        config: The project configuration.
        path: DuckDB: the file (default: the target's database). Spark: a staging version
            folder (default: the published version).
        read_only: Open without write access.
        functions: SQL functions (``@sql_function``) to register.
    """
    if target_type(config) == "spark":
        from cpo.adapters.spark import SparkDatabase

        return SparkDatabase(
            spark_settings(config),
            Path(path) if path else None,
            read_only=read_only,
            functions=functions,
        )
    from cpo.adapters.duckdb import Database

    return Database(path or config.database_path, read_only=read_only, functions=functions)


@contextlib.contextmanager
def atomic_build(
    config: Any, on_stale_wal: Callable[[Path], None] | None = None
) -> Iterator[tuple[Path, Any]]:
    """Yield a staging location and a ``commit`` that publishes it (see
    `cpo.adapters.duckdb.atomic_database`).

    Open the staging database with ``open_adapter(config, staging)``. Without ``commit`` the
    staging copy is deleted and the published database is left exactly as it was.
    """
    if target_type(config) == "spark":
        settings = spark_settings(config)
        if settings.catalog:  # also published into catalog.schema, after every check passed
            from cpo.adapters.spark.publish import atomic_catalog_version as atomic
        else:
            from cpo.adapters.warehouse import atomic_version as atomic
        with atomic(settings) as staged:
            yield staged
        return
    from cpo.adapters.duckdb import atomic_database

    with atomic_database(config.database_path, on_stale_wal=on_stale_wal) as staged:
        yield staged


def check_dialect(config: Any, nodes: Sequence[Any]) -> None:
    """Fail at compile time when a model uses what the target engine cannot run.

    Raises:
        ModelError: naming the model, its file and the construct (with the macro to use).
    """
    if target_type(config) != "spark":
        return
    from cpo.adapters.transpile import check_nodes
    from cpo.engine.steps import sql_functions

    check_nodes(nodes, [f.name for f in sql_functions(config)])

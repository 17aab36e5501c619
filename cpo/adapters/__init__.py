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
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpo.errors import ConfigurationError

TYPES = ("duckdb", "spark")
SPARK_KEYS = ("master", "remote", "warehouse", "schema", "catalog", "conf", "shuffle_partitions")
COMMON_KEYS = ("type", "database", "providers")


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


def _raw_target(config: Any) -> dict[str, Any]:
    document = getattr(config, "document", None)
    data = getattr(document, "data", None) or {}
    targets = data.get("targets") if isinstance(data, Mapping) else None
    raw = (targets or {}).get(config.target.name) if isinstance(targets, Mapping) else None
    return dict(raw) if isinstance(raw, Mapping) else {}


def _error(config: Any, key: str, message: str) -> ConfigurationError:
    document = getattr(config, "document", None)
    if document is not None:
        return document.error(key, message)
    return ConfigurationError(message, path="cpo.yml", key=key)


def target_type(config: Any) -> str:
    """``duckdb`` or ``spark``: the engine of the project's active target.

    Raises:
        ConfigurationError: an unknown ``type``.
    """
    kind = _raw_target(config).get("type", "duckdb")
    if kind not in TYPES:
        raise _error(
            config,
            f"targets.{config.target.name}.type",
            f"unknown target type {kind!r}; expected one of: {', '.join(TYPES)}",
        )
    return str(kind)


def spark_settings(config: Any) -> SparkSettings:
    """The Spark settings of the active target, validated.

    Raises:
        ConfigurationError: an unknown key, a wrong type, or both/neither of master and remote.
    """
    raw = _raw_target(config)
    key = f"targets.{config.target.name}"
    unknown = sorted(set(raw) - set(SPARK_KEYS) - set(COMMON_KEYS))
    if unknown:
        raise _error(
            config,
            f"{key}.{unknown[0]}",
            f"unknown key for a spark target; expected one of: {', '.join(SPARK_KEYS)}",
        )
    for name in ("master", "remote", "warehouse", "schema", "catalog"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _error(config, f"{key}.{name}", f"expected a non-empty string, got {value!r}")
    if raw.get("master") and raw.get("remote"):
        raise _error(
            config,
            f"{key}.remote",
            "set either master (local[N], a cluster URL) or remote (sc://host:port), not both",
        )
    schema = raw.get("schema", "cpo")
    for name, value in (("schema", schema), ("catalog", raw.get("catalog") or "c")):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise _error(config, f"{key}.{name}", f"expected letters, digits and _, got {value!r}")
    conf = raw.get("conf", {}) or {}
    if not isinstance(conf, Mapping):
        raise _error(config, f"{key}.conf", "expected a mapping of Spark settings")
    partitions = raw.get("shuffle_partitions", 8)
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise _error(config, f"{key}.shuffle_partitions", "expected an integer of at least 1")
    return SparkSettings(
        root=Path(config.root),
        master=None if raw.get("remote") else raw.get("master", "local[2]"),
        remote=raw.get("remote"),
        warehouse=raw.get("warehouse", "spark-warehouse"),
        schema=schema,
        catalog=raw.get("catalog"),
        conf={str(k): str(v) for k, v in conf.items()},
        shuffle_partitions=partitions,
    )


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

"""Publish a Spark build into an existing catalog/schema (``catalog:`` in the target).

The build itself is the warehouse's (`cpo.adapters.warehouse.atomic_version`): every node and
test runs against a staging version folder registered in a database of its own (created with a
unique name, dropped after). Only when all nodes and error-severity tests passed does ``commit``
run, and only then is ``<catalog>.<schema>`` touched:

1. check first, change nothing: the schema is created if missing (never dropped); a table or view
   of a model's name that CPO did not publish (no ``cpo.published_by`` table property) stops the
   publish with an error, so another team's table is never replaced;
2. flip the warehouse's ``CURRENT`` pointer (atomic);
3. point each table at the new version's Parquet folder (``CREATE OR REPLACE TABLE ... LOCATION``
   where the catalog supports it -- Delta, Unity, v2 catalogs -- else ``DROP TABLE`` of the old
   external entry and ``CREATE TABLE``: metadata only, the files are not copied), recreate the
   views, and drop what an earlier publish made for models that no longer exist.

Step 3 is one catalog operation per table, not a transaction: a reader may see old and new tables
side by side for the second it takes (on a Hive-style catalog a table is briefly missing between
DROP and CREATE). If it is interrupted, the next build re-registers every table.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cpo.adapters import SparkSettings
from cpo.adapters.spark.session import first_line, literal, quote_name, session
from cpo.adapters.warehouse import VIEWS, atomic_version, current_version, relations
from cpo.errors import ModelError

MARK = "cpo.published_by"
log = logging.getLogger("cpo")


def target_schema(settings: SparkSettings) -> str:
    """The quoted ``catalog.schema`` a build publishes into."""
    return f"{quote_name(str(settings.catalog))}.{quote_name(settings.schema)}"


def _owner(settings: SparkSettings) -> str:
    """The value of the table property that marks what this warehouse published."""
    return str((settings.warehouse_path / settings.schema).resolve())


def published_objects(spark: Any, settings: SparkSettings) -> dict[str, tuple[str, str | None]]:
    """Tables and views in the target schema: name -> (``table``/``view``, publisher or None)."""
    target = target_schema(settings)
    found: dict[str, tuple[str, str | None]] = {}
    for table in spark.catalog.listTables(f"{settings.catalog}.{settings.schema}"):
        if table.isTemporary:
            continue
        rows = spark.sql(f"show tblproperties {target}.{quote_name(table.name)}").collect()
        owner = {str(r[0]): str(r[1]) for r in rows}.get(MARK)
        found[table.name] = ("view" if table.tableType == "VIEW" else "table", owner)
    return found


def check_publish(spark: Any, settings: SparkSettings, names: set[str]) -> None:
    """Create the target schema if missing; refuse to replace what CPO did not publish.

    Raises:
        ModelError: a table or view of a model's name exists there without CPO's mark.
    """
    target = target_schema(settings)
    try:
        spark.sql(f"create schema if not exists {target}")
        existing = published_objects(spark, settings)
    except Exception as e:
        raise ModelError(f"cannot use the schema {target} to publish: {first_line(e)}") from e
    foreign = sorted(n for n in names if n in existing and existing[n][1] is None)
    if foreign:
        raise ModelError(
            f"{target} already has {', '.join(foreign)}, which CPO did not publish (no "
            f"{MARK} property); nothing was published. Drop or rename those, or set another "
            "schema for the target in cpo.yml"
        )


def _replace_table(spark: Any, name: str, location: Path, was: str | None, props: str) -> None:
    where = literal(str(location))
    if was == "view":
        spark.sql(f"drop view if exists {name}")
    try:
        spark.sql(f"create or replace table {name} using parquet location {where} {props}")
    except Exception:  # a Hive-style (v1) catalog: REPLACE TABLE is not supported
        spark.sql(f"drop table if exists {name}")  # external: only the catalog entry goes
        spark.sql(f"create table {name} using parquet location {where} {props}")


def publish_version(spark: Any, settings: SparkSettings, version: Path) -> list[str]:
    """Point the target schema's tables and views at a published version folder.

    Returns:
        Views that could not be created there (they read files or temporary views).
    """
    target = target_schema(settings)
    existing = published_objects(spark, settings)
    props = f"tblproperties ({literal(MARK)} = {literal(_owner(settings))})"
    wanted = relations(version)
    for name, kind in wanted.items():
        if kind == "table":
            was = existing.get(name, (None, None))[0]
            _replace_table(spark, f"{target}.{quote_name(name)}", version / name, was, props)
    previous = spark.catalog.currentDatabase()
    previous_catalog = spark.catalog.currentCatalog()
    pending = [n for n, k in wanted.items() if k == "view"]
    try:
        spark.sql(f"use {target}")  # the views' unqualified names resolve in the target
        while pending:
            failed = []
            for name in pending:
                text = (version / VIEWS / f"{name}.sql").read_text(encoding="utf-8")
                if existing.get(name, (None, None))[0] == "table":
                    spark.sql(f"drop table if exists {quote_name(name)}")
                try:
                    spark.sql(f"create or replace view {quote_name(name)} {props} as\n{text}")
                except Exception:
                    failed.append(name)
            if len(failed) == len(pending):
                break
            pending = failed
    finally:
        with contextlib.suppress(Exception):
            spark.catalog.setCurrentCatalog(previous_catalog)
            spark.catalog.setCurrentDatabase(previous)
    for name, (kind, owner) in existing.items():
        if owner is not None and name not in wanted:  # a model removed since the last publish
            what = "view" if kind == "view" else "table"
            spark.sql(f"drop {what} if exists {target}.{quote_name(name)}")
    if pending:
        log.warning("views not published to the catalog", extra={"views": pending})
    return pending


@contextlib.contextmanager
def atomic_catalog_version(settings: SparkSettings) -> Iterator[tuple[Path, Callable[[], None]]]:
    """`atomic_version`, whose ``commit`` also publishes into ``catalog.schema``.

    Without ``commit`` (a failed node or error-severity test) the target schema is not touched.
    """
    with atomic_version(settings) as (staging, commit):

        def publish() -> None:
            spark = session(settings)
            check_publish(spark, settings, set(relations(staging)))
            commit()
            version = current_version(settings)
            assert version is not None
            try:
                publish_version(spark, settings, version)
            except Exception as e:
                raise ModelError(
                    f"the build was published to the warehouse but registering it in "
                    f"{target_schema(settings)} failed: {first_line(e)}; the next build "
                    "registers every table again"
                ) from e

        yield staging, publish

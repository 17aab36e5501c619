"""Node values: what the loader finds on disk and the compiler fills in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SEED = "seed"
MODEL = "model"
PYTHON = "python"
TEST = "test"
MATERIALIZATIONS = ("table", "view", "incremental", "ephemeral")
SEVERITIES = ("error", "warn")


@dataclass(frozen=True)
class TestSpec:
    """A data test: a generic one from ``schema.yml`` or a singular SQL file.

    Attributes:
        kind: ``unique``, ``not_null``, ``accepted_values``, ``relationships`` or ``singular``.
        model: The node the test is attached to (its failures block that node's descendants).
        column: The column tested, for generic tests.
        args: The test's arguments (``values``, ``to``, ``field``).
        severity: ``error`` (fails the build) or ``warn``.
    """

    kind: str
    model: str
    column: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    severity: str = "error"


@dataclass(frozen=True)
class Node:
    """A seed, SQL model, Python step or data test.

    Attributes:
        name: Unique name; for seeds, models and steps also the relation name.
        resource_type: One of SEED, MODEL, PYTHON, TEST.
        path: The source file, relative to the project root.
        raw: The source text (SQL with Jinja, or Python).
        config: Materialization, tags, unique_key, enabled, severity, column_types, ...
        depends_on: Names of the nodes this one reads (from ``ref()``).
        sql: For models and tests, the compiled SQL (after `cpo.engine.compile`).
        description, columns: Documentation from ``schema.yml``.
        test: For tests, what is tested.
    """

    name: str
    resource_type: str
    path: Path
    raw: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    sql: str = ""
    description: str = ""
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    test: TestSpec | None = None

    @property
    def materialized(self) -> str:
        """How the node is stored: table, view, incremental, ephemeral (seeds: table)."""
        return self.config.get("materialized", "table")

    @property
    def tags(self) -> tuple[str, ...]:
        """The node's tags, from config."""
        tags = self.config.get("tags", ())
        return (tags,) if isinstance(tags, str) else tuple(tags)

    @property
    def severity(self) -> str:
        """For tests: ``error`` or ``warn``."""
        return self.test.severity if self.test else "error"

    def with_(self, **changes: Any) -> Node:
        """Return a copy with some fields changed."""
        return replace(self, **changes)

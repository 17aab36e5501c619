"""Python steps: loading ``udfs/*.py`` modules, the ``ctx`` they receive, and SQL functions."""

from __future__ import annotations

import importlib.util
import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from cpo.adapters.duckdb import Database, SqlFunction
from cpo.engine.config import ProjectConfig, lookup
from cpo.engine.logs import hash_id
from cpo.engine.nodes import Node
from cpo.engine.udf import MARK
from cpo.errors import ConfigurationError, ModelError

_MISSING = object()
_MODULES: dict[Path, tuple[float, ModuleType]] = {}


def load_module(root: Path, relative: Path) -> ModuleType:
    """Import a ``udfs/`` file (cached until the file changes); its folder is importable."""
    path = (root / relative).resolve()
    mtime = path.stat().st_mtime
    cached = _MODULES.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"cpo_project_udfs.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
        raise ModelError(
            f"cannot import Python step: {type(e).__name__}: {e}",
            path=str(relative),
            line=lines[-1] if lines else None,
        ) from e
    _MODULES[path] = (mtime, module)
    return module


def sql_functions(config: ProjectConfig) -> list[SqlFunction]:
    """Every ``@sql_function`` declared in ``udfs/*.py`` (files that mention it are imported)."""
    functions = []
    folder = config.path("udfs")
    if not folder.is_dir():
        return functions
    for path in sorted(folder.glob("*.py")):
        if "sql_function" not in path.read_text(encoding="utf-8"):
            continue
        module = load_module(config.root, path.relative_to(config.root))
        for value in vars(module).values():
            spec = getattr(value, MARK, None)
            if spec and callable(value):
                functions.append(SqlFunction(function=value, **spec))
    return functions


class Context:
    """What a Python step's ``model(ctx)`` receives.

    Attributes:
        node: The step being run.
        project_dir: The project root.
        run_id: This build's invocation id.
        log: A logger writing JSON lines (never log PII or message bodies; use `hash_id`).
    """

    def __init__(
        self,
        *,
        node: Node,
        config: ProjectConfig,
        db: Database | None,
        run_id: str,
        log: logging.Logger,
        services: Any = None,
    ) -> None:
        self.node = node
        self.config = config
        self.project_dir = config.root
        self.run_id = run_id
        self.log = log
        self._db = db
        self._services = services

    def ref(self, name: str) -> Any:
        """A DuckDB relation over another node's table.

        Raises:
            ModelError: `name` is not among the step's dependencies (found from ``ctx.ref``
                calls with a literal name).
        """
        if name not in self.node.depends_on:
            raise ModelError(
                f"ctx.ref({name!r}) is not a declared dependency; write the name as a string "
                "literal in ctx.ref(...) so the DAG can see it",
                path=str(self.node.path),
                node=self.node.name,
            )
        return self.sql(f'select * from "{name}"')

    def sql(self, query: str, params: list[Any] | None = None) -> Any:
        """A DuckDB relation for any query over the database being built."""
        if self._db is None:
            raise ModelError("no database is open in this context", node=self.node.name)
        try:
            return self._db.relation(query, params)
        except Exception as e:
            raise ModelError(
                f"SQL error: {e}", path=str(self.node.path), node=self.node.name
            ) from e

    def var(self, name: str, default: Any = _MISSING, *, expect: type | tuple | None = None) -> Any:
        """A value under ``vars:`` in cpo.yml (dotted name), checked against `expect`.

        Raises:
            ConfigurationError: the var is missing (and no default) or of the wrong type,
                naming the key path and its line in cpo.yml.
        """
        key = f"vars.{name}"
        try:
            value = lookup(self.config.vars, name)
        except KeyError:
            if default is not _MISSING:
                return default
            raise self.config.document.error(key, "is required but not set") from None
        if expect is not None and not isinstance(value, expect):
            names = (
                " or ".join(t.__name__ for t in expect)
                if isinstance(expect, tuple)
                else expect.__name__
            )
            raise self.config.document.error(key, f"expected {names}, got {value!r}")
        return value

    def hash_id(self, value: object) -> str:
        """Salted hash of an identifier, for logs."""
        return hash_id(value, self.config.log_salt_env, self.config.root)

    @property
    def services(self) -> Any:
        """The build's services: providers behind the call layer, prompts, error recording."""
        if self._services is None:
            raise ModelError("providers are not available in this context", node=self.node.name)
        return self._services

    def provider(self, kind: str) -> Any:
        """The configured provider for a step kind, wrapped by the call layer."""
        return self.services.provider(kind, step=self.node.name)

    def prompt(self, name: str, **variables: Any) -> str:
        """Render a template from ``prompts/`` in the sandbox."""
        return self.services.prompts.render(name, **variables)

    def prompt_source(self, name: str) -> str:
        """The raw text of a template in ``prompts/``."""
        return self.services.prompts.source(name)

    def record_error(self, item_key: str, error: str) -> None:
        """Record a failed item in ``run_errors`` (it is never silently dropped)."""
        self.services.record_error(self.node.name, item_key, error)


def step_config(node: Node, config: ProjectConfig, log: logging.Logger) -> Mapping[str, Any]:
    """A step's config: its ``schema.yml`` config, updated by its module's ``config(ctx)``."""
    module = load_module(config.root, node.path)
    configure: Callable[[Context], Mapping[str, Any]] | None = getattr(module, "config", None)
    if configure is None:
        return node.config
    ctx = Context(node=node, config=config, db=None, run_id="", log=log)
    try:
        values = configure(ctx)
    except ConfigurationError:
        raise
    except Exception as e:
        raise ModelError(
            f"config(ctx) failed: {type(e).__name__}: {e}", path=str(node.path), node=node.name
        ) from e
    return {**node.config, **dict(values or {})}


def plan_hooks(
    config: ProjectConfig, db: Database, log: logging.Logger
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Tables that ``udfs/`` modules add to ``plan`` through a ``def plan(ctx)`` function.

    Each hook returns ``(title, rows)``; it sees the planned (never committed) database.
    """
    tables = []
    folder = config.path("udfs")
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
        if "def plan(" not in path.read_text(encoding="utf-8"):
            continue
        relative = path.relative_to(config.root)
        module = load_module(config.root, relative)
        node = Node(name=path.stem, resource_type="python", path=relative)
        ctx = Context(node=node, config=config, db=db, run_id="", log=log)
        tables.append(module.plan(ctx))
    return tables

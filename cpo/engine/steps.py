"""Python steps: loading ``udfs/*.py`` modules, the ``ctx`` they receive, and SQL functions."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from cpo.adapters.duckdb import Database, SqlFunction
from cpo.engine.config import ProjectConfig, lookup
from cpo.engine.logs import hash_id
from cpo.engine.nodes import Node
from cpo.engine.plugins import flattened, hookimpl, hooks
from cpo.engine.udf import MARK
from cpo.errors import ConfigurationError, ModelError

_MISSING = object()
_MODULES: dict[Path, tuple[float, ModuleType]] = {}
PACKAGE = "cpo_project_udfs"  # project modules are named cpo_project_udfs.<file stem>
_IMPORTS = threading.RLock()


def load_module(root: Path, relative: Path) -> ModuleType:
    """Import a ``udfs/`` file as ``cpo_project_udfs.<stem>`` (cached until the file changes).

    While it runs, its siblings are importable by their bare names (``from _experiment_design
    import ...``, `project_imports`); nothing is left on ``sys.path`` or under a bare name in
    ``sys.modules`` afterwards.
    """
    path = (root / relative).resolve()
    with project_imports(path.parent):
        return _load(path, relative)


def _load(path: Path, relative: Path) -> ModuleType:
    mtime = path.stat().st_mtime
    cached = _MODULES.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    name = f"{PACKAGE}.{path.stem}"
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


@contextlib.contextmanager
def project_imports(folder: Path) -> Iterator[None]:
    """Make the modules of a ``udfs/`` folder importable by their bare names, for a while.

    A sibling import (``from _content import ...``, at the top of a step or inside one of its
    functions) resolves to the same ``cpo_project_udfs.<stem>`` module `load_module` returns.
    Modules of other folders or projects that have the same bare names are hidden meanwhile
    and put back afterwards, so two projects in one process never see each other's files.
    """
    folder = folder.resolve()
    with _IMPORTS:  # steps run one at a time; this keeps helper threads from interleaving
        if any(isinstance(f, _Siblings) and f.folder == folder for f in sys.meta_path):
            yield  # already inside a step of this folder
            return
        finder = _Siblings(folder)
        saved = {n: sys.modules[n] for n in finder.loaded()}
        for name in saved:
            del sys.modules[name]
        sys.meta_path.insert(0, finder)
        try:
            yield
        finally:
            sys.meta_path.remove(finder)
            for name in finder.loaded():
                del sys.modules[name]
            sys.modules.update(saved)


class _Siblings(importlib.abc.MetaPathFinder):
    """Finds ``udfs/<name>.py`` (as its ``cpo_project_udfs`` module) and ``udfs/<name>/``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        names = {p.stem for p in folder.glob("*.py")} | {
            p.parent.name for p in folder.glob("*/__init__.py")
        }
        # A file named like the standard library or an installed package never shadows it.
        self.names = {n for n in names if n not in sys.stdlib_module_names and not _installed(n)}
        self.submodule_prefixes = tuple(f"{n}." for n in self.names)

    def loaded(self) -> list[str]:
        """The names in ``sys.modules`` this folder's files own (bare names, submodules)."""
        # Called twice per step: exact lookups and one C-level prefix scan, not a split per name.
        bare = [n for n in self.names if n in sys.modules]
        if not self.submodule_prefixes:
            return bare
        return bare + [n for n in list(sys.modules) if n.startswith(self.submodule_prefixes)]

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if path is not None or fullname not in self.names:
            return None  # submodules of a udfs/ package are found through its __path__
        package = self.folder / fullname / "__init__.py"
        if package.is_file():
            return importlib.util.spec_from_file_location(
                fullname, package, submodule_search_locations=[str(package.parent)]
            )
        file = self.folder / f"{fullname}.py"
        return importlib.util.spec_from_loader(fullname, _Alias(file))


def _installed(name: str) -> bool:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if module is None or file is None:
        return module is not None  # built-in or namespace modules are not the project's
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    return any(Path(file).resolve().is_relative_to(p) for p in prefixes)


class _Alias(importlib.abc.Loader):
    """Loads a bare sibling name as the one ``cpo_project_udfs.<stem>`` module of its file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create_module(self, spec: Any) -> ModuleType:
        return _load(self.path, Path(self.path.parent.name, self.path.name))

    def exec_module(self, module: ModuleType) -> None:
        # The import system set __spec__ to the bare name's; the module keeps its own.
        module.__spec__ = importlib.util.spec_from_file_location(module.__name__, self.path)


def project_modules(config: ProjectConfig) -> list[ModuleType]:
    """Every module of the project's ``udfs/`` folder, imported (in file order)."""
    folder = config.path("udfs")
    if not folder.is_dir():
        return []
    return [
        load_module(config.root, path.relative_to(config.root))
        for path in sorted(folder.glob("*.py"))
    ]


def sql_functions(config: ProjectConfig) -> list[SqlFunction]:
    """Every SQL function registered by a plugin (the project's ``@sql_function``s included)."""
    return flattened(hooks().cpo_sql_functions(config=config))


@hookimpl
def cpo_sql_functions(config: ProjectConfig) -> list[SqlFunction]:
    """The functions marked ``@sql_function`` in the project's ``udfs/*.py``."""
    functions = []
    for module in project_modules(config):
        for value in vars(module).values():
            spec = getattr(value, MARK, None)
            if spec and callable(value) and value.__module__ == module.__name__:
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
        with project_imports(config.path("udfs")):
            values = configure(ctx)
    except ConfigurationError:
        raise
    except Exception as e:
        raise ModelError(
            f"config(ctx) failed: {type(e).__name__}: {e}", path=str(node.path), node=node.name
        ) from e
    return {**node.config, **dict(values or {})}


def plan_tables(
    config: ProjectConfig, db: Database, log: logging.Logger
) -> list[tuple[str, list[dict[str, Any]]]]:
    """The tables every plugin adds to ``plan`` (the project's ``plan(ctx)`` functions included).

    Each is ``(title, rows)``, computed on the planned (never committed) database.
    """
    return flattened(hooks().cpo_plan_tables(config=config, db=db, log=log))


@hookimpl
def cpo_plan_tables(
    config: ProjectConfig, db: Database, log: logging.Logger
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Tables from the ``plan(ctx)`` function of any ``udfs/*.py`` module that defines one."""
    tables = []
    for module in project_modules(config):
        function = getattr(module, "plan", None)
        if not callable(function) or function.__module__ != module.__name__:
            continue  # imported from a sibling: that module offers it itself
        relative = Path(module.__file__ or "").resolve().relative_to(config.root.resolve())
        node = Node(name=relative.stem, resource_type="python", path=relative)
        ctx = Context(node=node, config=config, db=db, run_id="", log=log)
        with project_imports(config.path("udfs")):
            tables.append(function(ctx))
    return tables

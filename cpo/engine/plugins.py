"""One registration mechanism for everything that plugs into the engine (pluggy hooks).

Built-in domain packages and providers register exactly as an outside package would, in the way
datasette does: the engine loads its built-in plugins by module name (`DEFAULT_PLUGINS`, so it
never imports a domain package in code) and then every module an installed distribution names
under the ``cpo`` entry-point group::

    # pyproject.toml of an outside package
    [project.entry-points.cpo]
    my_plugin = "my_package.cpo_plugin"

    # my_package/cpo_plugin.py
    from cpo.engine.plugins import hookimpl

    @hookimpl
    def cpo_providers():
        return {("generation", "mine"): make_my_provider}

Each hook below says what a plugin contributes. Hooks that return a mapping or a list are
collected from every plugin (later registrations win on equal keys); hooks marked *first
result* are answered by one plugin (the last registered that returns something not None).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pluggy

from cpo.errors import CPOError

PROJECT_NAME = "cpo"
ENTRY_POINT_GROUP = "cpo"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# The built-in plugins, by module name (imported when the plugin manager is first needed).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "cpo.engine.steps",  # the project's own udfs/: SQL functions and plan tables
    "cpo.providers.plugin",
    "cpo.personalization.plugin",
    "cpo.experiments.plugin",
    "cpo.reporting.plugin",
)


@dataclass(frozen=True)
class CliCommand:
    """A command that a plugin adds to the CLI.

    Attributes:
        name: The command (``cpo NAME``).
        help: One line for ``cpo --help``.
        arguments: Adds the command's arguments to its `argparse.ArgumentParser`.
        run: Runs the command: ``run(args, console) -> exit code``; raise `CPOError` for a
            user mistake (the CLI prints it and exits 1).
    """

    name: str
    help: str
    arguments: Callable[[Any], None]
    run: Callable[[Any, Any], int]


# --- hook specifications -----------------------------------------------------------------------


class HookSpecs(Protocol):
    """The hooks a plugin may implement (as module-level functions of the same names, or
    methods of a registered object), each marked with `hookimpl`."""

    @hookspec
    def cpo_providers(self) -> Mapping[tuple[str, str], Callable[..., Any]]:
        """Provider factories by ``(kind, name)``: the ``type:`` of ``providers.<kind>`` in cpo.yml.

        A factory takes the provider's settings and the environment and returns the provider
        (`cpo.providers.base.ProviderFactory`).
        """

    @hookspec
    def cpo_stand_ins(self) -> Mapping[str, str]:
        """The offline provider (by name) that answers for each kind in ``plan``, which must not
        call a service: kind -> name."""

    @hookspec(firstresult=True)
    def cpo_prompt_renderer(self, config: Any) -> Any:
        """The sandboxed renderer of the project's ``prompts/`` that steps use (``ctx.prompt``)."""

    @hookspec(firstresult=True)
    def cpo_combine_providers(
        self, kind: str, providers: Sequence[Mapping[str, Any]]
    ) -> Mapping[str, Any] | None:
        """The one provider that stands for a list of providers under ``providers.<kind>``
        (e.g. layered safety), or None when this plugin does not combine `kind`."""

    @hookspec
    def cpo_prepare_build(self, config: Any, db: Any) -> None:
        """Ready a build's staging connection before any node runs (e.g. attach source files)."""

    @hookspec
    def cpo_sql_functions(self, config: Any) -> Sequence[Any]:
        """SQL functions (`cpo.adapters.duckdb.SqlFunction`) registered on every connection."""

    @hookspec
    def cpo_plan_tables(self, config: Any, db: Any, log: logging.Logger) -> Sequence[Any]:
        """Tables for ``plan``: ``(title, rows)`` pairs computed on the planned (never committed)
        database."""

    @hookspec
    def cpo_vars_sections(self) -> Mapping[str, Any]:
        """Schemas of ``vars.<name>`` sections: a `cpo.engine.settings.Section` or a type."""

    @hookspec
    def cpo_settings_sections(self) -> Mapping[str, Any]:
        """Schemas of top-level keys of ``cpo.yml`` that a plugin owns (``sources``): a
        `cpo.engine.settings.Section`, checked when ``cpo.yml`` loads like a ``vars`` section."""

    @hookspec
    def cpo_jinja_globals(self, config: Any) -> Mapping[str, Any]:
        """Globals that models see when they are compiled (e.g. ``sources``)."""

    @hookspec
    def cpo_cli_commands(self) -> Sequence[CliCommand]:
        """Commands added to the CLI (`CliCommand`)."""

    @hookspec(firstresult=True)
    def cpo_build_summary(
        self, db: Any, ledger: Sequence[Sequence[Any]], run_id: str, errors: Sequence[Sequence[str]]
    ) -> Mapping[str, Any] | None:
        """What a build did, in a few numbers (kept in ``run_results.json`` as ``summary``)."""

    @hookspec(firstresult=True)
    def cpo_summary_lines(self, summary: Mapping[str, Any] | None) -> Sequence[str] | None:
        """The lines the CLI prints for a build's summary."""

    @hookspec(firstresult=True)
    def cpo_write_report(self, config: Any, path: Path | None) -> Path | None:
        """Write the HTML report (to `path`, or the default place); return where it was written."""

    @hookspec
    def cpo_report_sections(self) -> Sequence[Any]:
        """Sections added to the HTML report: ``cpo.reporting.sections.ReportSection`` values
        (appended in order), or ``(section, {"before": name})`` / ``(section, {"after": name})``
        pairs, which the report passes to its ``register_section``."""

    @hookspec(firstresult=True)
    def cpo_track_run(
        self, config: Any, run: Any, report_path: Path | None, tracking_uri: str | None
    ) -> str | None:
        """Log a run to an experiment tracker; return the tracker's run id."""

    @hookspec
    def cpo_tracking_params(self, config: Any) -> Mapping[str, Any]:
        """Run parameters worth comparing across tracked runs (no secrets, no customer data)."""

    @hookspec
    def cpo_telemetry_exporters(self) -> Mapping[str, Callable[[str, Mapping[str, str]], Any]]:
        """Tracer factories by exporter name: ``factory(service_name, env) -> Tracer``."""


# --- the plugin manager ------------------------------------------------------------------------

_MANAGER: pluggy.PluginManager | None = None
_LOCK = threading.Lock()


def plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager: the built-in plugins, then the ``cpo`` entry points."""
    global _MANAGER
    with _LOCK:
        if _MANAGER is None:
            manager = pluggy.PluginManager(PROJECT_NAME)
            manager.add_hookspecs(HookSpecs)
            for name in DEFAULT_PLUGINS:
                manager.register(importlib.import_module(name), name=name)
            try:
                manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
                manager.check_pending()  # a hook name no spec knows is a typo: say so now
            except Exception as e:
                raise CPOError(
                    f"an installed CPO plugin (entry point group {ENTRY_POINT_GROUP!r}) could "
                    f"not be loaded: {type(e).__name__}: {e}. Fix or uninstall it "
                    "(--debug shows the traceback)."
                ) from e
            _MANAGER = manager
        return _MANAGER


def hooks() -> Any:
    """The hook caller (``hooks().cpo_providers()``)."""
    return plugin_manager().hook


def merged(results: Sequence[Mapping[Any, Any] | None]) -> dict[Any, Any]:
    """One mapping from the mappings plugins returned; later plugins win on equal keys.

    pluggy calls the last registered plugin first, so the results are merged in reverse.
    """
    out: dict[Any, Any] = {}
    for result in reversed(results):
        out.update(result or {})
    return out


def flattened(results: Sequence[Sequence[Any] | None]) -> list[Any]:
    """One list from the lists plugins returned, in registration order."""
    return [item for result in reversed(results) for item in (result or [])]


def plugins() -> list[str]:
    """Names of the registered plugins (built-in and installed), in registration order."""
    return [name for name, plugin in plugin_manager().list_name_plugin() if plugin is not None]


def no_plugin(what: str, hook: str) -> str:
    """The message for `what` needing a plugin that implements `hook`, when none does."""
    return (
        f"'{what}' needs a plugin that implements {hook}, and none is installed "
        "(the built-in one is cpo.reporting.plugin)"
    )

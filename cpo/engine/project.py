"""`Project`: the Python API that the CLI mirrors one to one.

project = Project.load("path/to/project")
results = project.build(select=["+segments"])

The verbs are here; how a build runs (staging, call layer, commit) is `cpo.engine.runs`, what
they return is `cpo.engine.results`, and where they may write is `cpo.engine.outputs`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpo.adapters import check_dialect, database_exists, open_adapter, target_type
from cpo.engine.compile import Compiler, check_config, quote
from cpo.engine.config import ProjectConfig, load_config
from cpo.engine.execute import OnResult
from cpo.engine.generic_tests import generic_test_sql
from cpo.engine.graph import Graph
from cpo.engine.loader import load_project
from cpo.engine.lock import project_lock
from cpo.engine.logs import project_salt
from cpo.engine.nodes import MODEL, PYTHON, SEED, Node
from cpo.engine.outputs import looks_like_html, output_path, protected_paths, writes_files
from cpo.engine.plugins import hooks, merged, no_plugin
from cpo.engine.results import Plan, RunResult
from cpo.engine.runs import Inspect, staged_run, test_run, write_compiled
from cpo.engine.services import Services
from cpo.engine.steps import plan_tables, sql_functions, step_config
from cpo.errors import CPOError, ModelError, UsageError

Selection = Sequence[str] | None
"""Selectors (``+segments``, ``tag:nightly``, ...); None selects everything."""
_ONLY: dict[str, Callable[[Node], bool]] = {
    "run": lambda node: node.resource_type in (MODEL, PYTHON),
    "seed": lambda node: node.resource_type == SEED,
}
"""The nodes a command runs, when not all the selected ones; only ``build`` runs tests."""


@dataclass
class Project:
    """A CPO project on disk: its configuration and the verbs that act on it."""

    config: ProjectConfig
    full_refresh: bool = False
    log_format: str = "json"
    env: Mapping[str, str] | None = None
    on_result: OnResult | None = None
    on_start: Callable[[Node], None] | None = None
    notices: list[str] = field(default_factory=list)
    retry_failed: bool = False
    _graph: Graph | None = field(default=None, repr=False)
    _existing: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def load(
        cls,
        path: str | Path = ".",
        *,
        target: str | None = None,
        vars: Mapping[str, Any] | None = None,
        full_refresh: bool = False,
        max_cost_usd: float | None = None,
        log_format: str = "json",
        env: Mapping[str, str] | None = None,
    ) -> Project:
        """Read ``cpo.yml`` from `path`.

        Raises:
            ConfigurationError: the configuration is missing or invalid.
        """
        config = load_config(
            Path(path).resolve(), target=target, cli_vars=vars, max_cost_usd=max_cost_usd
        )
        return cls(config, full_refresh=full_refresh, log_format=log_format, env=env)

    # -- graph -------------------------------------------------------------------------------

    def graph(self, existing: set[str] | None = None) -> Graph:
        """Load and compile every node, and build the DAG (cached per Project).

        Raises:
            ModelError: unknown ref, cycle, Jinja error.
        """
        if self._graph is None:
            if existing is None:
                existing = self._existing_relations()
            self._existing = set(existing)
            self._graph = self._compile(existing)
        return self._graph

    def _existing_relations(self) -> set[str]:
        if not database_exists(self.config):
            return set()
        try:
            db = open_adapter(self.config, read_only=True)
        except CPOError:
            return set()
        try:
            return set(db.relations())
        finally:
            db.close()

    def _compile(self, existing: set[str]) -> Graph:
        loaded = load_project(self.config)
        compiler = Compiler(self.config, existing, self.full_refresh)
        # Globals from plugins: the domain's sources:, segment rules and merge tags as data.
        compiler.globals.update(merged(hooks().cpo_jinja_globals(config=self.config)))
        log = logging.getLogger("cpo")
        nodes: list[Node] = []
        for node in loaded.nodes:
            if node.resource_type == MODEL:
                rendered = compiler.render(node)
                node = node.with_(
                    sql=rendered.sql, depends_on=rendered.refs, config=rendered.config
                )
                check_config(node)
            elif node.resource_type == PYTHON:
                node = node.with_(config=step_config(node, self.config, log))
            if node.config.get("enabled", True):
                nodes.append(node)
        enabled = {n.name for n in nodes}
        tests = []
        for test in loaded.tests:
            if test.test and test.test.kind == "singular":
                rendered = compiler.render(test)
                severity = str(rendered.config.get("severity", "error")).lower()
                test = test.with_(
                    sql=rendered.sql,
                    depends_on=rendered.refs,
                    test=dataclasses.replace(test.test, severity=severity),
                )
            else:
                test = test.with_(sql=generic_test_sql(test))
            if test.test and test.test.model and test.test.model not in enabled:
                continue  # tests of disabled nodes are disabled too
            tests.append(test)
        check_dialect(self.config, [*nodes, *tests])  # what the target engine cannot run
        return Graph.build(nodes, tests)

    # -- verbs -------------------------------------------------------------------------------

    @writes_files
    def compile(self, select: Selection = None, exclude: Selection = None) -> dict[str, Path]:
        """Write compiled SQL and the manifest to ``target/``; return node -> compiled path."""
        graph = self.graph()
        paths = write_compiled(self.config, graph)
        names, tests = graph.select(select, exclude, available=self._existing)
        return {n: paths[n] for n in [*names, *tests] if n in paths}

    def ls(self, select: Selection = None, exclude: Selection = None) -> list[Node]:
        """The selected nodes and tests, in DAG order."""
        graph = self.graph()
        names, tests = graph.select(select, exclude, available=self._existing)
        return [graph.nodes[n] for n in names] + [graph.tests[t] for t in tests]

    @writes_files
    def build(
        self, select: Selection = None, exclude: Selection = None, *, fail_fast: bool = False
    ) -> RunResult:
        """Seed, run and test the selected nodes in DAG order, atomically."""
        return self._execute("build", select, exclude, fail_fast=fail_fast)[0]

    @writes_files
    def run(
        self, select: Selection = None, exclude: Selection = None, *, fail_fast: bool = False
    ) -> RunResult:
        """Run the selected models and steps (no seeds, no tests), atomically."""
        return self._execute("run", select, exclude, fail_fast=fail_fast)[0]

    @writes_files
    def seed(
        self, select: Selection = None, exclude: Selection = None, *, fail_fast: bool = False
    ) -> RunResult:
        """Load the selected seeds, atomically."""
        return self._execute("seed", select, exclude, fail_fast=fail_fast)[0]

    @writes_files
    def plan(self, select: Selection = None, exclude: Selection = None) -> Plan:
        """What a build would call and cost, without calling any service.

        The build runs in a throw-away copy of the database: cached answers are used as in a
        real build, each cache miss is counted with estimated tokens and cost, and an offline
        stand-in answers it so later steps can be planned too. Nothing is written or paid.
        """
        tables: list[tuple[str, list[dict[str, Any]]]] = []
        run, services = self._execute(
            "plan",
            select,
            exclude,
            fail_fast=False,
            inspect=lambda db, log: tables.extend(plan_tables(self.config, db, log)),
        )
        return Plan(
            run=run,
            calls=list(services.planned),
            max_cost_usd=self.config.max_cost_usd,
            target=self.config.target.name,
            tables=tables,
        )

    @writes_files
    def test(self, select: Selection = None, exclude: Selection = None) -> RunResult:
        """Run the selected data tests against the current database (read-only)."""
        self._require_database()
        graph = self.graph()
        _, tests = graph.select(select, exclude, available=self._existing)
        return test_run(self, tests, built=self._existing)

    def show(
        self, select: str | None = None, inline: str | None = None, limit: int = 10
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Preview a model's rows or an inline query: (columns, rows).

        The database is opened read-only, an inline query must be exactly one ``SELECT``, and
        it runs with DuckDB's file and network access switched off (`Database.preview`).
        """
        if bool(select) == bool(inline):
            raise UsageError("show needs exactly one of --select MODEL or --inline SQL")
        if limit < 0:
            raise UsageError(f"--limit must be 0 or more rows, got {limit}")
        self._require_database()
        db = open_adapter(self.config, read_only=True, functions=sql_functions(self.config))
        try:
            sql = self._show_sql(select, db.relations()) if select else str(inline)
            try:
                return db.preview(sql, int(limit))
            except ModelError as e:
                raise ModelError(f"query failed: {e.message}") from None
        finally:
            db.close()

    def _show_sql(self, select: str, built: Mapping[str, str]) -> str:
        """The query that shows model `select`, or a UsageError saying why it cannot be shown."""
        graph = self.graph()
        if select not in graph.nodes:
            graph.select([select])  # raises the helpful "matches no node" error
            raise UsageError(f"show --select takes one model name, not {select!r}")
        if graph.nodes[select].materialized == "ephemeral":
            raise UsageError(
                f"{select} is ephemeral (inlined into the models that use it), so it "
                "has no table to show; make it a view or query it with --inline"
            )
        if select not in built:
            raise UsageError(
                f"{select} has not been built into {self.config.database_path.name} yet; "
                f"run 'build --select +{select}' first"
            )
        return f"select * from {quote(select)}"

    @writes_files
    def report(self, out: str | Path | None = None, *, force: bool = False) -> Path:
        """Write the self-contained HTML experiment report; return its path.

        Raises:
            UsageError: `out` is the database, a project input, a folder, or (without
                `force`) an existing file that is not an HTML page.
        """
        path = None
        if out:
            path = output_path(self.config, Path(out), "report --out")
            if path.is_dir():
                raise UsageError(f"report --out {out} is a folder; give a file name (.html)")
            if path.exists() and not force and not looks_like_html(path):
                raise UsageError(
                    f"report --out {out} exists and is not an HTML page; choose another file "
                    "or pass --force to replace it"
                )
        written = hooks().cpo_write_report(config=self.config, path=path)
        if written is None:
            raise UsageError(no_plugin("report", "cpo_write_report"))
        return Path(written)

    @writes_files
    def export(
        self,
        fmt: str = "parquet",
        select: Sequence[str] | None = None,
        out: str | Path | None = None,
        *,
        partition_by: str | None = None,
        include_pii: bool = False,
        force: bool = False,
    ) -> Any:
        """Export tables for BI (PII hashed unless `include_pii`); return the ExportResult.

        The output folder must be new, empty, or an earlier export (it holds
        ``export_manifest.json``), unless `force`; it is never the database or a project input.

        Args:
            fmt: ``parquet`` or ``csv``.
            select: Nodes to export (selection grammar); all built tables when None.
            out: Folder to write into (default ``target/export``).
            partition_by: A column to partition each table by (one folder per value).
            include_pii: Export PII columns as they are instead of hashed.
            force: Write into a non-empty folder that is not an earlier export.
        """
        from cpo.engine.export import MANIFEST_NAME, export_tables, load_manifest

        fmt = fmt.lower()  # --format CSV means csv
        out_dir = self.config.path("target") / "export"
        if out:
            out_dir = output_path(self.config, Path(out), "export --out")
            if out_dir.exists() and not out_dir.is_dir():
                raise UsageError(f"export --out {out} is a file; give a folder")
            foreign = out_dir.is_dir() and any(out_dir.iterdir())
            if foreign and not force and not (out_dir / MANIFEST_NAME).exists():
                raise UsageError(
                    f"export --out {out} is a folder with other files in it; choose a new or "
                    "empty folder (or an earlier export), or pass --force to write into it"
                )
        self.compile()
        tables = None
        if select:
            names, _ = self.graph().select(select)
            tables = [n for n in names if self.graph().nodes[n].materialized != "ephemeral"]
        source: Any = self.config.database_path
        if target_type(self.config) == "spark":  # Spark writes the files (part files per table)
            if not database_exists(self.config):
                raise UsageError(
                    f"target {self.config.target.name!r} has no published Spark tables yet; "
                    "run 'build' first"
                )
            source = open_adapter(self.config, read_only=True)
        try:
            return export_tables(
                source,
                load_manifest(self.config.path("target")),
                out_dir=out_dir,
                fmt=fmt,
                tables=tables,
                partition_by=partition_by,
                include_pii=include_pii,
                salt_env=self.config.log_salt_env,
                salt=self.salt(),
                protected=self.protected_paths(),
            )
        finally:
            if not isinstance(source, Path):
                source.close()

    def track(
        self, run: RunResult, *, report_path: Path | None = None, tracking_uri: str | None = None
    ) -> str:
        """Log a run's parameters, metrics and artifacts to MLflow (local store by default),
        through the ``cpo_track_run`` plugin hook (`cpo.reporting.tracking`).

        Returns:
            The MLflow run id.
        """
        run_id = hooks().cpo_track_run(
            config=self.config, run=run, report_path=report_path, tracking_uri=tracking_uri
        )
        if run_id is None:
            raise UsageError(no_plugin("--track", "cpo_track_run"))
        return str(run_id)

    @writes_files
    def docs(self) -> Path:
        """Write the static documentation site under ``target/docs/``; return its index."""
        from cpo.engine.docs import write_docs
        from cpo.engine.export import load_manifest

        self.compile()
        target = self.config.path("target")
        return write_docs(load_manifest(target), self.config, target)

    @writes_files
    def clean(self) -> list[Path]:
        """Delete ``target/`` and ``logs/`` (never the database, the cache or the seeds).

        Raises:
            CPOError: a build is running in this project (it writes ``target/``).
        """
        removed = []
        with project_lock(self.config.root, "clean"):
            for kind in ("target", "logs"):
                path = self.config.path(kind)
                if path.exists():
                    shutil.rmtree(path)
                    removed.append(path)
        return removed

    # -- helpers -----------------------------------------------------------------------------

    def protected_paths(self) -> list[Path]:
        """What no output may replace: the database (and its WAL), ``cpo.yml``, the inputs."""
        return protected_paths(self.config)

    def salt(self) -> str:
        """The project's hashing salt (created on first use; says so once in `notices`)."""
        salt, notice = project_salt(self.config.root, self.config.log_salt_env)
        if notice:
            self.notices.append(notice)
        return salt

    def _require_database(self) -> None:
        if not database_exists(self.config):
            raise UsageError(
                f"{self.config.database_path.name} does not exist yet; run 'build' first"
            )

    def _execute(
        self,
        command: str,
        select: Selection,
        exclude: Selection,
        *,
        fail_fast: bool,
        inspect: Inspect | None = None,
    ) -> tuple[RunResult, Services]:
        """Run what `command` selects in a staging database (`cpo.engine.runs.staged_run`),
        holding the project's lock unless it is a ``plan``."""
        graph = self.graph()
        names, tests = graph.select(select, exclude, available=self._existing)
        if only := _ONLY.get(command):
            names = [n for n in names if only(graph.nodes[n])]
        if command != "build":
            tests = []
        if not names and not tests:
            what = " ".join(select or []) or "(all)"
            raise UsageError(
                f"--select {what!r} selects nothing for '{command}'"
                f"{' once --exclude is applied' if exclude else ''}; nothing was run and "
                f"{self.config.database_path.name} is unchanged. Run 'ls --select ...' to check "
                "a selection."
            )
        if command == "plan":
            return staged_run(
                self, command, names, tests, fail_fast=False, dry_run=True, inspect=inspect
            )
        with project_lock(self.config.root, command):
            return staged_run(self, command, names, tests, fail_fast=fail_fast)

"""`Project`: the Python API that the CLI mirrors one to one.

project = Project.load("path/to/project")
results = project.build(select=["+segments"])
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpo.adapters import (
    atomic_build,
    check_dialect,
    database_exists,
    open_adapter,
    spark_settings,
    target_type,
)
from cpo.adapters.duckdb import Database
from cpo.engine import telemetry
from cpo.engine.artifacts import NodeResult, write_manifest, write_run_results
from cpo.engine.calls import LEDGER_COLUMNS, LEDGER_TABLE, LEDGER_VIEW, CallLayer, CallStore
from cpo.engine.compile import Compiler, check_config, generic_test_sql, quote, sql_literal
from cpo.engine.config import ProjectConfig, load_config
from cpo.engine.execute import OnResult, Runner
from cpo.engine.graph import Graph
from cpo.engine.loader import load_project
from cpo.engine.logs import configure, project_salt
from cpo.engine.nodes import MODEL, PYTHON, TEST, Node
from cpo.engine.plugins import hooks, merged
from cpo.engine.services import PlannedCall, Services
from cpo.engine.steps import plan_tables, sql_functions, step_config
from cpo.errors import CPOError, ModelError, UsageError

LOCK_FILE = Path(".cpo") / "lock"
_CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _writes_files(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn "cannot write" OS errors of a verb into a `CPOError` that says what to do."""

    @functools.wraps(method)
    def wrapper(self: Project, *args: Any, **kwargs: Any) -> Any:
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


@dataclass(frozen=True)
class RunResult:
    """The outcome of a command that runs nodes."""

    invocation_id: str
    command: str
    results: list[NodeResult]
    seconds: float
    database: Path
    committed: bool = False
    summary: dict[str, Any] | None = None
    """What the build did, from the ``cpo_build_summary`` plugin hook (`cpo.reporting.summary`:
    variants approved/blocked, fallback, calls, cost)."""

    @property
    def success(self) -> bool:
        """True when no node errored and no error-severity test failed."""
        return not any(r.failed for r in self.results)


@dataclass(frozen=True)
class Plan:
    """What `Project.plan` found: the calls a build would make, and their estimated cost."""

    run: RunResult
    calls: list[PlannedCall]
    max_cost_usd: float | None
    target: str
    tables: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        """Estimated cost of all planned calls."""
        return sum(c.cost_usd for c in self.calls)

    def by_step(self) -> list[dict[str, Any]]:
        """Calls, tokens and cost per step and provider."""
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for call in self.calls:
            row = rows.setdefault(
                (call.step, call.provider, call.model),
                {
                    "step": call.step,
                    "provider": call.provider,
                    "model": call.model,
                    "calls": 0,
                    "possible_repairs": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_usd": 0.0,
                },
            )
            row["possible_repairs" if call.possible else "calls"] += 1
            row["input_tokens"] += call.input_tokens
            row["output_tokens"] += call.output_tokens
            row["cost_usd"] += call.cost_usd
        return list(rows.values())


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
        compiler.env.globals.update(merged(hooks().cpo_jinja_globals(config=self.config)))
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
                test = test.with_(sql=rendered.sql, depends_on=rendered.refs)
                severity = str(rendered.config.get("severity", "error")).lower()
                test = test.with_(
                    test=test.test.__class__("singular", test.test.model, severity=severity)
                )
            else:
                test = test.with_(sql=generic_test_sql(test))
            if test.test and test.test.model and test.test.model not in enabled:
                continue  # tests of disabled nodes are disabled too
            tests.append(test)
        check_dialect(self.config, [*nodes, *tests])  # what the target engine cannot run
        return Graph.build(nodes, tests)

    # -- verbs -------------------------------------------------------------------------------

    @_writes_files
    def compile(
        self, select: Sequence[str] | None = None, exclude: Sequence[str] | None = None
    ) -> dict[str, Path]:
        """Write compiled SQL and the manifest to ``target/``; return node -> compiled path."""
        graph = self.graph()
        paths = self._write_compiled(graph)
        names, tests = graph.select(select, exclude, available=self._existing)
        return {n: paths[n] for n in [*names, *tests] if n in paths}

    def ls(
        self, select: Sequence[str] | None = None, exclude: Sequence[str] | None = None
    ) -> list[Node]:
        """The selected nodes and tests, in DAG order."""
        graph = self.graph()
        names, tests = graph.select(select, exclude, available=self._existing)
        return [graph.nodes[n] for n in names] + [graph.tests[t] for t in tests]

    @_writes_files
    def build(
        self,
        select: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        *,
        fail_fast: bool = False,
    ) -> RunResult:
        """Seed, run and test the selected nodes in DAG order, atomically."""
        return self._execute("build", select, exclude, fail_fast=fail_fast)

    @_writes_files
    def run(
        self,
        select: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        *,
        fail_fast: bool = False,
    ) -> RunResult:
        """Run the selected models and steps (no seeds, no tests), atomically."""
        return self._execute(
            "run",
            select,
            exclude,
            fail_fast=fail_fast,
            keep=lambda n: n.resource_type in (MODEL, PYTHON),
            with_tests=False,
        )

    @_writes_files
    def seed(
        self,
        select: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        *,
        fail_fast: bool = False,
    ) -> RunResult:
        """Load the selected seeds, atomically."""
        return self._execute(
            "seed",
            select,
            exclude,
            fail_fast=fail_fast,
            keep=lambda n: n.resource_type == "seed",
            with_tests=False,
        )

    @_writes_files
    def plan(
        self, select: Sequence[str] | None = None, exclude: Sequence[str] | None = None
    ) -> Plan:
        """What a build would call and cost, without calling any service.

        The build runs in a throw-away copy of the database: cached answers are used as in a
        real build, each cache miss is counted with estimated tokens and cost, and an offline
        stand-in answers it so later steps can be planned too. Nothing is written or paid.
        """
        holder: list[Services] = []
        tables: list[tuple[str, list[dict[str, Any]]]] = []
        run = self._execute(
            "plan",
            select,
            exclude,
            fail_fast=False,
            with_tests=False,
            services_out=holder,
            inspect=lambda db, log: tables.extend(plan_tables(self.config, db, log)),
        )
        planned = holder[0].planned if holder else []
        return Plan(
            run=run,
            calls=list(planned),
            max_cost_usd=self.config.max_cost_usd,
            target=self.config.target.name,
            tables=tables,
        )

    @_writes_files
    def test(
        self, select: Sequence[str] | None = None, exclude: Sequence[str] | None = None
    ) -> RunResult:
        """Run the selected data tests against the current database (read-only)."""
        database = self.config.database_path
        if not database_exists(self.config):
            raise UsageError(f"{database.name} does not exist yet; run 'build' first")
        graph = self.graph()
        _, tests = graph.select(select, exclude, available=self._existing)
        run_id = str(uuid.uuid4())
        log = configure(self.config.path("logs"), run_id, log_format=self.log_format)
        paths = self._write_compiled(graph)
        started = time.perf_counter()
        db = open_adapter(self.config, read_only=True, functions=sql_functions(self.config))
        try:
            runner = Runner(
                self.config, graph, db, run_id, log, _as_str(paths), on_result=self.on_result
            )
            # Tests of nodes that were never built are skipped and say so, not errors.
            unbuilt = {t: sorted(set(graph.tests[t].depends_on) - self._existing) for t in tests}
            results = [
                NodeResult(
                    t,
                    "test",
                    "skipped",
                    message=f"skipped: {', '.join(m)} not built yet",
                    path=str(graph.tests[t].path),
                )
                for t, m in unbuilt.items()
                if m
            ]
            results += runner.run([], [t for t, m in unbuilt.items() if not m])
        finally:
            db.close()
        return self._finish("test", run_id, results, started, committed=False)

    def show(
        self, select: str | None = None, inline: str | None = None, limit: int = 10
    ) -> tuple[list[str], list[tuple]]:
        """Preview a model's rows or an inline query: (columns, rows).

        The database is opened read-only, an inline query must be exactly one ``SELECT``, and
        it runs with DuckDB's file and network access switched off (`Database.preview`).
        """
        if bool(select) == bool(inline):
            raise UsageError("show needs exactly one of --select MODEL or --inline SQL")
        if limit < 0:
            raise UsageError(f"--limit must be 0 or more rows, got {limit}")
        database = self.config.database_path
        if not database_exists(self.config):
            raise UsageError(f"{database.name} does not exist yet; run 'build' first")
        db = open_adapter(self.config, read_only=True, functions=sql_functions(self.config))
        try:
            if select:
                graph = self.graph()
                if select not in graph.nodes:
                    graph.select([select])  # raises the helpful "matches no node" error
                    raise UsageError(f"show --select takes one model name, not {select!r}")
                if graph.nodes[select].materialized == "ephemeral":
                    raise UsageError(
                        f"{select} is ephemeral (inlined into the models that use it), so it "
                        "has no table to show; make it a view or query it with --inline"
                    )
                if select not in db.relations():
                    raise UsageError(
                        f"{select} has not been built into {database.name} yet; "
                        f"run 'build --select +{select}' first"
                    )
                sql = f"select * from {quote(select)}"
            else:
                sql = str(inline)
            try:
                return db.preview(sql, int(limit))
            except ModelError as e:
                raise ModelError(f"query failed: {e.message}") from None
        finally:
            db.close()

    @_writes_files
    def report(self, out: str | Path | None = None, *, force: bool = False) -> Path:
        """Write the self-contained HTML experiment report; return its path.

        Raises:
            UsageError: `out` is the database, a project input, a folder, or (without
                `force`) an existing file that is not an HTML page.
        """
        path = None
        if out:
            path = self._output_path(Path(out), "report --out")
            if path.is_dir():
                raise UsageError(f"report --out {out} is a folder; give a file name (.html)")
            if path.exists() and not force and not _looks_like_html(path):
                raise UsageError(
                    f"report --out {out} exists and is not an HTML page; choose another file "
                    "or pass --force to replace it"
                )
        written = hooks().cpo_write_report(config=self.config, path=path)
        if written is None:
            raise UsageError(_no_plugin("report", "cpo_write_report"))
        return Path(written)

    @_writes_files
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
            out_dir = self._output_path(Path(out), "export --out")
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
                salt=self._salt(),
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
            raise UsageError(_no_plugin("--track", "cpo_track_run"))
        return str(run_id)

    @_writes_files
    def docs(self) -> Path:
        """Write the static documentation site under ``target/docs/``; return its index."""
        from cpo.engine.docs import write_docs
        from cpo.engine.export import load_manifest

        self.compile()
        target = self.config.path("target")
        return write_docs(load_manifest(target), self.config, target)

    @_writes_files
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

    # -- guards ------------------------------------------------------------------------------

    def protected_paths(self) -> list[Path]:
        """What no output may replace: the database (and its WAL), ``cpo.yml``, the inputs."""
        database = self.config.database_path
        inputs = [self.config.path(k) for k in ("seeds", "models", "udfs", "prompts")]
        inputs.append(self.config.path("data_tests"))
        if target_type(self.config) == "spark":  # the Spark target's tables
            inputs.append(spark_settings(self.config).warehouse_path)
        return [
            database,
            database.with_name(f"{database.name}.wal"),
            self.config.root / "cpo.yml",
            self.config.root / ".cpo",
            self.config.root / self.config.cache_path,
            *inputs,
        ]

    def _output_path(self, out: Path, option: str) -> Path:
        """`out` resolved, or a UsageError when it is or lies inside a protected path."""
        path = (out if out.is_absolute() else Path.cwd() / out).resolve()
        for protected in self.protected_paths():
            protected = protected.resolve()
            if path == protected or path.is_relative_to(protected):
                what = (
                    "the project's database"
                    if protected.name.startswith(self.config.database_path.name)
                    else f"a project input ({protected.relative_to(self.config.root)})"
                    if protected.is_relative_to(self.config.root)
                    else str(protected)
                )
                raise UsageError(
                    f"{option} {out} would write onto {what}; choose another path "
                    "(--force does not allow this)"
                )
        return path

    def _salt(self) -> str:
        """The project's hashing salt (created on first use; says so once)."""
        salt, notice = project_salt(self.config.root, self.config.log_salt_env)
        if notice:
            self.notices.append(notice)
        return salt

    # -- execution ---------------------------------------------------------------------------

    def _execute(
        self,
        command: str,
        select: Sequence[str] | None,
        exclude: Sequence[str] | None,
        *,
        fail_fast: bool,
        keep: Callable[[Node], bool] | None = None,
        with_tests: bool = True,
        services_out: list[Services] | None = None,
        inspect: Callable[[Database, logging.Logger], None] | None = None,
    ) -> RunResult:
        graph = self.graph()
        names, tests = graph.select(select, exclude, available=self._existing)
        if keep:
            names = [n for n in names if keep(graph.nodes[n])]
        if not with_tests:
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
            return self._execute_locked(command, names, tests, fail_fast, services_out, inspect)
        with project_lock(self.config.root, command):
            return self._execute_locked(command, names, tests, fail_fast, services_out, inspect)

    def _execute_locked(
        self,
        command: str,
        names: Sequence[str],
        tests: Sequence[str],
        fail_fast: bool,
        services_out: list[Services] | None,
        inspect: Callable[[Database, logging.Logger], None] | None,
    ) -> RunResult:
        graph = self.graph()
        self._salt()
        run_id = str(uuid.uuid4())
        log = configure(self.config.path("logs"), run_id, log_format=self.log_format)
        log.info(
            "run started",
            extra={
                "command": command,
                "nodes": len(names),
                "tests": len(tests),
                "target": self.config.target.name,
            },
        )
        paths = self._write_compiled(graph)
        started = time.perf_counter()
        store = CallStore(self.config.root / self.config.cache_path)
        calls = CallLayer(
            store, self.config.calls, self.config.prices, self.config.max_cost_usd, run_id, log
        )
        calls.retry_failed = self.retry_failed
        dry_run = services_out is not None
        services = Services(
            self.config,
            calls,
            self.env,
            dry_run=dry_run,
            full_refresh=self.full_refresh,
            prompts=_prompt_renderer,
        )
        if services_out is not None:
            services_out.append(services)
        tracer = telemetry.configure(
            self.config.telemetry, self.env if self.env is not None else os.environ
        )
        try:
            with telemetry.run_span(
                tracer, run_id, command, target=self.config.target.name
            ) as span:
                runner = Runner(
                    self.config,
                    graph,
                    None,  # set once the staging database is open
                    run_id,
                    log,
                    _as_str(paths),
                    services=services,
                    fail_fast=fail_fast,
                    on_result=self.on_result,
                    on_start=self.on_start,
                    tracer=tracer,
                )
                results, committed = self._run_staged(
                    runner, names, tests, store, services, dry_run=dry_run, inspect=inspect
                )
                failed = sum(r.failed for r in results)
                span.set(
                    nodes=len(results),
                    failed=failed,
                    committed=committed,
                    status="error" if failed else "success",
                )
        finally:
            store.close()
            if tracer is not None:
                telemetry.flush()
        return self._finish(
            command, run_id, results, started, committed=committed, summary=services.summary
        )

    def _run_staged(
        self,
        runner: Runner,
        names: Sequence[str],
        tests: Sequence[str],
        store: CallStore,
        services: Services,
        *,
        dry_run: bool,
        inspect: Callable[[Database, logging.Logger], None] | None,
    ) -> tuple[list[NodeResult], bool]:
        """Run in a staging copy of the database; swap it in only if everything succeeded."""

        def stale_wal(aside: Path) -> None:
            message = (
                f"moved a stale {self.config.database_path.name}.wal (left by a crashed "
                f"read-write session) aside to {aside.name}: it would have replayed that "
                "session's changes onto the new build"
            )
            runner.log.warning(message, extra={"wal": aside.name})
            self.notices.append(message[0].upper() + message[1:] + ".")

        with atomic_build(self.config, on_stale_wal=stale_wal) as (
            staging,
            commit,
        ):
            runner.db = open_adapter(self.config, staging, functions=sql_functions(self.config))
            try:
                if limit := self.config.target.memory_limit:  # targets.<name>.memory_limit
                    runner.db.execute(f"set memory_limit = {sql_literal(limit)}")
                hooks().cpo_prepare_build(config=self.config, db=runner.db)  # e.g. attached sources
                results = runner.run(names, tests)
                if not dry_run:
                    services.summary = hooks().cpo_build_summary(
                        db=runner.db,
                        ledger=store.ledger.rows(),
                        run_id=runner.run_id,
                        errors=services.errors,
                    )
                ok = not any(r.failed for r in results)
                if inspect and ok:
                    inspect(runner.db, runner.log)
                if ok and not dry_run:
                    _write_call_tables(runner.db, store, services)
            finally:
                runner.db.close()
            if ok and not dry_run:
                commit()
                return results, True
        return results, False

    def _finish(
        self,
        command: str,
        run_id: str,
        results: list[NodeResult],
        started: float,
        *,
        committed: bool,
        summary: dict[str, Any] | None = None,
    ) -> RunResult:
        seconds = time.perf_counter() - started
        write_run_results(
            self.config.path("target"), run_id, command, results, seconds, summary=summary
        )
        log = logging.getLogger("cpo")
        log.info(
            "run finished",
            extra={
                "command": command,
                "seconds": round(seconds, 3),
                "committed": committed,
                "failed": sum(r.failed for r in results),
            },
        )
        return RunResult(
            run_id, command, results, seconds, self.config.database_path, committed, summary
        )

    def _write_compiled(self, graph: Graph) -> dict[str, Path]:
        from cpo.engine.compile import resolve_refs

        target = self.config.path("target")
        paths: dict[str, Path] = {}
        for node in [*graph.nodes.values(), *graph.tests.values()]:
            if node.resource_type not in (MODEL, TEST):
                continue
            relative = (
                node.path if node.resource_type == MODEL else Path("tests", f"{node.name}.sql")
            )
            path = target / "compiled" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(resolve_refs(node.sql, graph.nodes), encoding="utf-8")
            paths[node.name] = path.relative_to(self.config.root)
        write_manifest(
            target, self.config.name, graph.nodes.values(), graph.tests.values(), _as_str(paths)
        )
        return paths


@contextlib.contextmanager
def project_lock(root: Path, command: str) -> Iterator[None]:
    """Hold the project's lock (``.cpo/lock``) for a command that writes the project.

    ``build``, ``run``, ``seed`` and ``clean`` take it: a second one fails at once, naming the
    process that holds it, instead of waiting or interleaving. The lock is an OS lock
    (``flock``) on an open file, so it is released when its process ends, even by ``kill -9``.

    Raises:
        CPOError: another process holds the lock, or the lock file cannot be created.
    """
    path = root / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CPOError(
            f"cannot create the project lock {LOCK_FILE}: {e.strerror or e}; "
            f"'{command}' needs a writable project folder"
        ) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode("utf-8", "replace").split()
            pid = holder[0] if holder else "unknown"
            other = holder[1] if len(holder) > 1 else "build"
            raise CPOError(
                f"another build (pid {pid}, '{other}') is running in this project; wait for "
                f"it to finish (or stop it) and run '{command}' again. Nothing was changed."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _no_plugin(what: str, hook: str) -> str:
    return (
        f"'{what}' needs a plugin that implements {hook}, and none is installed "
        "(the built-in one is cpo.reporting.plugin)"
    )


def _prompt_renderer(config: ProjectConfig) -> Any:
    """The renderer of ``prompts/``, from the ``cpo_prompt_renderer`` plugin hook (the domain's
    prompt language and merge tags are not the engine's): `Services`' ``prompts`` factory."""
    renderer = hooks().cpo_prompt_renderer(config=config)
    if renderer is None:
        raise UsageError(_no_plugin("prompts", "cpo_prompt_renderer"))
    return renderer


def _looks_like_html(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(512).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html"))


def _as_str(paths: Mapping[str, Path]) -> dict[str, str]:
    return {k: str(v) for k, v in paths.items()}


def _write_call_tables(db: Database, store: CallStore, services: Services) -> None:
    """Write ``provider_calls`` (every build's history), ``llm_calls`` (its former name, a view
    over it) and ``run_errors`` (this build's)."""
    import pandas as pd

    ledger = pd.DataFrame(store.ledger.rows(), columns=list(LEDGER_COLUMNS))
    ledger["cache_hit"] = ledger["cache_hit"].astype(bool)
    db.materialize_frame(LEDGER_TABLE, ledger)
    db.materialize_sql(LEDGER_VIEW, f"select * from {LEDGER_TABLE}", "view")
    errors = pd.DataFrame(services.errors, columns=["step", "item_key", "error", "at"])
    errors = errors.astype(
        {"step": "string", "item_key": "string", "error": "string", "at": "string"}
    )
    db.materialize_frame("run_errors", errors)

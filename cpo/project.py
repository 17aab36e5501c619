"""`Project`: the Python API that the CLI mirrors one to one.

project = Project.load("path/to/project")
results = project.build(select=["+segments"])
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpo import telemetry
from cpo.adapters import atomic_build, check_dialect, database_exists, open_adapter
from cpo.artifacts import NodeResult, write_manifest, write_run_results
from cpo.calls import LEDGER_COLUMNS, Cache, CallLayer
from cpo.compile import Compiler, check_config, generic_test_sql
from cpo.config import ProjectConfig, load_config
from cpo.db import Database
from cpo.errors import CPOError, ModelError, UsageError
from cpo.execute import OnResult, Runner
from cpo.graph import Graph
from cpo.loader import load_project
from cpo.logs import configure
from cpo.nodes import MODEL, PYTHON, TEST, Node
from cpo.services import PlannedCall, Services
from cpo.steps import plan_hooks, sql_functions, step_config


@dataclass(frozen=True)
class RunResult:
    """The outcome of a command that runs nodes."""

    invocation_id: str
    command: str
    results: list[NodeResult]
    seconds: float
    database: Path
    committed: bool = False

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
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_usd": 0.0,
                },
            )
            row["calls"] += 1
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

    def build(
        self,
        select: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        *,
        fail_fast: bool = False,
    ) -> RunResult:
        """Seed, run and test the selected nodes in DAG order, atomically."""
        return self._execute("build", select, exclude, fail_fast=fail_fast)

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
            inspect=lambda db, log: tables.extend(plan_hooks(self.config, db, log)),
        )
        planned = holder[0].planned if holder else []
        return Plan(
            run=run,
            calls=list(planned),
            max_cost_usd=self.config.max_cost_usd,
            target=self.config.target.name,
            tables=tables,
        )

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
        """Preview a model's rows or an inline query: (columns, rows)."""
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
                sql = f'select * from "{select}"'
            else:
                # A habitual trailing ';' or '-- comment' must not break the wrapping query.
                sql = str(inline).strip().rstrip(";").strip()
            try:
                return db.fetch(f"select * from (\n{sql}\n) limit {int(limit)}")
            except ModelError as e:
                raise ModelError(f"query failed: {e.message}") from None
        finally:
            db.close()

    def report(self, out: str | Path | None = None) -> Path:
        """Write the self-contained HTML experiment report; return its path."""
        from cpo.report import write_report

        return write_report(self.config, Path(out) if out else None)

    def export(
        self,
        fmt: str = "parquet",
        select: Sequence[str] | None = None,
        out: str | Path | None = None,
        *,
        partition_by: str | None = None,
        include_pii: bool = False,
    ) -> Any:
        """Export tables for BI (PII hashed unless `include_pii`); return the ExportResult.

        Args:
            fmt: ``parquet`` or ``csv``.
            select: Nodes to export (selection grammar); all built tables when None.
            out: Folder to write into (default ``target/export``).
            partition_by: A column to partition each table by (one folder per value).
            include_pii: Export PII columns as they are instead of hashed.
        """
        from cpo.export import export_tables, load_manifest

        fmt = fmt.lower()  # --format CSV means csv
        self.compile()
        tables = None
        if select:
            names, _ = self.graph().select(select)
            tables = [n for n in names if self.graph().nodes[n].materialized != "ephemeral"]
        return export_tables(
            self.config.database_path,
            load_manifest(self.config.path("target")),
            out_dir=Path(out) if out else self.config.path("target") / "export",
            fmt=fmt,
            tables=tables,
            partition_by=partition_by,
            include_pii=include_pii,
            salt_env=self.config.log_salt_env,
        )

    def track(
        self, run: RunResult, *, report_path: Path | None = None, tracking_uri: str | None = None
    ) -> str:
        """Log a run's parameters, metrics and artifacts to MLflow (local store by default).

        Returns:
            The MLflow run id.
        """
        from cpo.tracking import track_run

        return track_run(self.config, run, report_path=report_path, tracking_uri=tracking_uri)

    def docs(self) -> Path:
        """Write the static documentation site under ``target/docs/``; return its index."""
        from cpo.docs import write_docs
        from cpo.export import load_manifest

        self.compile()
        target = self.config.path("target")
        return write_docs(load_manifest(target), self.config.database_path, target)

    def clean(self) -> list[Path]:
        """Delete ``target/`` and ``logs/`` (never the database, the cache or the seeds)."""
        removed = []
        for kind in ("target", "logs"):
            path = self.config.path(kind)
            if path.exists():
                shutil.rmtree(path)
                removed.append(path)
        return removed

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
        cache = Cache(self.config.root / self.config.cache_path)
        calls = CallLayer(
            cache, self.config.calls, self.config.prices, self.config.max_cost_usd, run_id, log
        )
        dry_run = services_out is not None
        services = Services(
            self.config, calls, self.env, dry_run=dry_run, full_refresh=self.full_refresh
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
                    runner, names, tests, cache, services, dry_run=dry_run, inspect=inspect
                )
                failed = sum(r.failed for r in results)
                span.set(
                    nodes=len(results),
                    failed=failed,
                    committed=committed,
                    status="error" if failed else "success",
                )
        finally:
            cache.close()
            if tracer is not None:
                telemetry.flush()
        return self._finish(command, run_id, results, started, committed=committed)

    def _run_staged(
        self,
        runner: Runner,
        names: Sequence[str],
        tests: Sequence[str],
        cache: Cache,
        services: Services,
        *,
        dry_run: bool,
        inspect: Callable[[Database, logging.Logger], None] | None,
    ) -> tuple[list[NodeResult], bool]:
        """Run in a staging copy of the database; swap it in only if everything succeeded."""
        with atomic_build(self.config) as (staging, commit):
            runner.db = open_adapter(self.config, staging, functions=sql_functions(self.config))
            try:
                results = runner.run(names, tests)
                ok = not any(r.failed for r in results)
                if inspect and ok:
                    inspect(runner.db, runner.log)
                if ok and not dry_run:
                    _write_call_tables(runner.db, cache, services)
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
    ) -> RunResult:
        seconds = time.perf_counter() - started
        write_run_results(self.config.path("target"), run_id, command, results, seconds)
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
        return RunResult(run_id, command, results, seconds, self.config.database_path, committed)

    def _write_compiled(self, graph: Graph) -> dict[str, Path]:
        from cpo.compile import resolve_refs

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


def _as_str(paths: Mapping[str, Path]) -> dict[str, str]:
    return {k: str(v) for k, v in paths.items()}


def _write_call_tables(db: Database, cache: Cache, services: Services) -> None:
    """Write ``llm_calls`` (every build's history) and ``run_errors`` (this build's)."""
    import pandas as pd

    ledger = pd.DataFrame(cache.ledger(), columns=list(LEDGER_COLUMNS))
    ledger["cache_hit"] = ledger["cache_hit"].astype(bool)
    db.materialize_frame("llm_calls", ledger)
    errors = pd.DataFrame(services.errors, columns=["step", "item_key", "error", "at"])
    errors = errors.astype(
        {"step": "string", "item_key": "string", "error": "string", "at": "string"}
    )
    db.materialize_frame("run_errors", errors)

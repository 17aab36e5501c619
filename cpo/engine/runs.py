"""How a command runs nodes around the `Runner`: staged builds and read-only test runs.

``build``, ``run``, ``seed`` and ``plan`` share `staged_run`: the selected nodes run in a staging
copy of the database with the call layer, services and telemetry set up around them, and the
copy replaces the database only when everything succeeded (``plan`` never publishes). ``test``
runs the data tests against the published database (`test_run`). Both write the compiled SQL,
the manifest and ``run_results.json``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cpo.adapters import atomic_build, open_adapter
from cpo.adapters.duckdb import Database
from cpo.engine import telemetry
from cpo.engine.artifacts import NodeResult, write_manifest, write_run_results
from cpo.engine.calls import LEDGER_COLUMNS, LEDGER_TABLE, LEDGER_VIEW, CallLayer, CallStore
from cpo.engine.compile import resolve_refs, sql_literal
from cpo.engine.config import ProjectConfig
from cpo.engine.execute import OnResult, Runner
from cpo.engine.graph import Graph
from cpo.engine.logs import configure
from cpo.engine.nodes import MODEL, TEST, Node
from cpo.engine.plugins import hooks, no_plugin
from cpo.engine.results import RunResult
from cpo.engine.services import Services
from cpo.engine.steps import sql_functions
from cpo.errors import UsageError


class Project(Protocol):
    """What a run needs of its project (`cpo.engine.project.Project` is one)."""

    config: ProjectConfig
    log_format: str
    env: Mapping[str, str] | None
    full_refresh: bool
    retry_failed: bool
    on_result: OnResult | None
    on_start: Callable[[Node], None] | None
    notices: list[str]

    def graph(self, existing: set[str] | None = None) -> Graph:
        """The compiled DAG."""
        ...

    def salt(self) -> str:
        """The project's hashing salt."""
        ...


Inspect = Callable[[Database, logging.Logger], None]
"""Called with the staging database after a successful run (``plan`` reads its tables)."""


def staged_run(
    project: Project,
    command: str,
    names: Sequence[str],
    tests: Sequence[str],
    *,
    fail_fast: bool,
    dry_run: bool = False,
    inspect: Inspect | None = None,
) -> tuple[RunResult, Services]:
    """Run `names` and `tests` in a staging copy of the database; publish it on success.

    Args:
        project: The project (its configuration, options and callbacks).
        command: The command's name, for logs and ``run_results.json``.
        names: Nodes to run, in DAG order.
        tests: Tests to run, each after the last of its nodes.
        fail_fast: Skip everything after the first failure.
        dry_run: ``plan``: answer cache misses with offline stand-ins and never publish.
        inspect: Called with the staging database when every node succeeded.

    Returns:
        The run's result, and the services it used (``plan`` reads their planned calls).
    """
    config = project.config
    graph = project.graph()
    project.salt()
    run_id = str(uuid.uuid4())
    log = configure(config.path("logs"), run_id, log_format=project.log_format)
    log.info(
        "run started",
        extra={
            "command": command,
            "nodes": len(names),
            "tests": len(tests),
            "target": config.target.name,
        },
    )
    paths = write_compiled(config, graph)
    started = time.perf_counter()
    store = CallStore(config.root / config.cache_path)
    calls = CallLayer(store, config.calls, config.prices, config.max_cost_usd, run_id, log)
    calls.retry_failed = project.retry_failed
    services = Services(
        config,
        calls,
        project.env,
        dry_run=dry_run,
        full_refresh=project.full_refresh,
        prompts=_prompt_renderer,
    )
    tracer = telemetry.configure(
        config.telemetry, project.env if project.env is not None else os.environ
    )

    def runner_on(db: Database) -> Runner:
        return Runner(
            config,
            graph,
            db,
            run_id,
            log,
            _as_str(paths),
            services=services,
            fail_fast=fail_fast,
            on_result=project.on_result,
            on_start=project.on_start,
            tracer=tracer,
        )

    try:
        with telemetry.run_span(tracer, run_id, command, target=config.target.name) as span:
            results, committed = _run_staged(
                project, runner_on, names, tests, store, services, log, dry_run, inspect
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
    result = finish(
        config, command, run_id, results, started, committed=committed, summary=services.summary
    )
    return result, services


def _run_staged(
    project: Project,
    runner_on: Callable[[Database], Runner],
    names: Sequence[str],
    tests: Sequence[str],
    store: CallStore,
    services: Services,
    log: logging.Logger,
    dry_run: bool,
    inspect: Inspect | None,
) -> tuple[list[NodeResult], bool]:
    """Run in a staging copy of the database; swap it in only if everything succeeded."""
    config = project.config

    def stale_wal(aside: Path) -> None:
        message = (
            f"moved a stale {config.database_path.name}.wal (left by a crashed "
            f"read-write session) aside to {aside.name}: it would have replayed that "
            "session's changes onto the new build"
        )
        log.warning(message, extra={"wal": aside.name})
        project.notices.append(message[0].upper() + message[1:] + ".")

    with atomic_build(config, on_stale_wal=stale_wal) as (staging, commit):
        db = open_adapter(config, staging, functions=sql_functions(config))
        try:
            if limit := config.target.memory_limit:  # targets.<name>.memory_limit
                db.execute(f"set memory_limit = {sql_literal(limit)}")
            hooks().cpo_prepare_build(config=config, db=db)  # e.g. attached sources
            runner = runner_on(db)
            results = runner.run(names, tests)
            if not dry_run:
                services.summary = hooks().cpo_build_summary(
                    db=db, ledger=store.ledger.rows(), run_id=runner.run_id, errors=services.errors
                )
            ok = not any(r.failed for r in results)
            if inspect and ok:
                inspect(db, runner.log)
            if ok and not dry_run:
                _write_call_tables(db, store, services)
        finally:
            db.close()
        if ok and not dry_run:
            commit()
            return results, True
    return results, False


def test_run(project: Project, tests: Sequence[str], built: set[str]) -> RunResult:
    """Run data tests against the published database, read-only.

    Tests of nodes that are not among the `built` relations are skipped (and say so), not errors.
    """
    config = project.config
    graph = project.graph()
    run_id = str(uuid.uuid4())
    log = configure(config.path("logs"), run_id, log_format=project.log_format)
    paths = write_compiled(config, graph)
    started = time.perf_counter()
    db = open_adapter(config, read_only=True, functions=sql_functions(config))
    try:
        runner = Runner(config, graph, db, run_id, log, _as_str(paths), on_result=project.on_result)
        unbuilt = {t: sorted(set(graph.tests[t].depends_on) - built) for t in tests}
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
    return finish(config, "test", run_id, results, started, committed=False)


def finish(
    config: ProjectConfig,
    command: str,
    run_id: str,
    results: list[NodeResult],
    started: float,
    *,
    committed: bool,
    summary: dict[str, Any] | None = None,
) -> RunResult:
    """Write ``run_results.json``, log the end of the run and return its `RunResult`."""
    seconds = time.perf_counter() - started
    write_run_results(config.path("target"), run_id, command, results, seconds, summary=summary)
    logging.getLogger("cpo").info(
        "run finished",
        extra={
            "command": command,
            "seconds": round(seconds, 3),
            "committed": committed,
            "failed": sum(r.failed for r in results),
        },
    )
    return RunResult(run_id, command, results, seconds, config.database_path, committed, summary)


def write_compiled(config: ProjectConfig, graph: Graph) -> dict[str, Path]:
    """Write each model's and test's compiled SQL under ``target/compiled/`` and the manifest.

    Returns:
        Node name -> compiled file, relative to the project root.
    """
    target = config.path("target")
    paths: dict[str, Path] = {}
    for node in [*graph.nodes.values(), *graph.tests.values()]:
        if node.resource_type not in (MODEL, TEST):
            continue
        relative = node.path if node.resource_type == MODEL else Path("tests", f"{node.name}.sql")
        path = target / "compiled" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(resolve_refs(node.sql, graph.nodes), encoding="utf-8")
        paths[node.name] = path.relative_to(config.root)
    write_manifest(target, config.name, graph.nodes.values(), graph.tests.values(), _as_str(paths))
    return paths


def _prompt_renderer(config: ProjectConfig) -> Any:
    """The renderer of ``prompts/``, from the ``cpo_prompt_renderer`` plugin hook (the domain's
    prompt language and merge tags are not the engine's): `Services`' ``prompts`` factory."""
    renderer = hooks().cpo_prompt_renderer(config=config)
    if renderer is None:
        raise UsageError(no_plugin("prompts", "cpo_prompt_renderer"))
    return renderer


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

"""Run nodes in DAG order, each node's tests right after it; skip downstream of failures."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpo.adapters.duckdb import Database
from cpo.engine.artifacts import NodeResult
from cpo.engine.compile import quote, resolve_refs
from cpo.engine.config import ProjectConfig
from cpo.engine.graph import Graph
from cpo.engine.logs import hash_id
from cpo.engine.nodes import MODEL, PYTHON, SEED, TEST, Node
from cpo.engine.pii import pii_of
from cpo.engine.steps import Context, load_module, project_imports
from cpo.engine.telemetry import node_span
from cpo.errors import BudgetExceededError, CPOError

OnResult = Callable[[NodeResult], None]
TEST_SAMPLE_ROWS = 3


@dataclass
class Runner:
    """Executes selected nodes and tests against one open database.

    Attributes:
        compiled_paths: Node name -> path of its compiled SQL (for error messages).
    """

    config: ProjectConfig
    graph: Graph
    db: Database
    run_id: str
    log: logging.Logger
    compiled_paths: dict[str, str]
    services: Any = None
    fail_fast: bool = False
    on_result: OnResult | None = None
    on_start: Callable[[Node], None] | None = None
    tracer: Any = None

    def run(self, node_names: Sequence[str], test_names: Sequence[str]) -> list[NodeResult]:
        """Run the nodes in order, each followed by its tests; return every result.

        A node is skipped when a parent failed, was skipped, or has a failing error-severity
        test. With ``fail_fast`` everything after the first failure is skipped.
        """
        blocked: dict[str, str] = {}
        results: list[NodeResult] = []
        tests_by_model: dict[str, list[str]] = {}
        position = {name: index for index, name in enumerate(node_names)}
        for test_name in test_names:
            # A test runs right after the last of its dependencies that this run builds.
            test = self.graph.tests[test_name]
            built = [p for p in test.depends_on if p in position]
            anchor = max(built, key=position.__getitem__) if built else ""
            tests_by_model.setdefault(anchor, []).append(test_name)
        stop = False

        def emit(result: NodeResult) -> None:
            nonlocal stop
            results.append(result)
            if self.on_result:
                self.on_result(result)
            if result.failed and self.fail_fast:
                stop = True

        for name in node_names:
            node = self.graph.nodes[name]
            cause = next((blocked[p] for p in node.depends_on if p in blocked), None)
            if stop or cause:
                blocked[name] = cause or "an earlier failure (--fail-fast)"
                emit(self._skipped(node, blocked[name]))
                for test_name in tests_by_model.pop(name, []):
                    emit(self._skipped(self.graph.tests[test_name], f"{name} did not run"))
                continue
            result = self._traced(node, self._run_node)
            emit(result)
            if result.failed:
                blocked[name] = f"{name} failed"
            for test_name in tests_by_model.pop(name, []):
                test = self.graph.tests[test_name]
                test_result = (
                    self._skipped(test, blocked[name])
                    if name in blocked
                    else self._traced(test, self._run_test)
                )
                emit(test_result)
                if test_result.failed:
                    blocked.setdefault(name, f"test {test_name} failed")
        for leftover in tests_by_model.values():
            for test_name in leftover:
                test = self.graph.tests[test_name]
                emit(
                    self._skipped(test, "--fail-fast")
                    if stop
                    else self._traced(test, self._run_test)
                )
        return results

    def _traced(self, node: Node, run: Callable[[Node], NodeResult]) -> NodeResult:
        """Run a node or test inside an OpenTelemetry span (a no-op unless enabled)."""
        with node_span(self.tracer, node.name, node.resource_type) as span:
            result = run(node)
            span.record(result)
        return result

    def _skipped(self, node: Node, why: str) -> NodeResult:
        return NodeResult(
            node.name, node.resource_type, "skipped", message=f"skipped: {why}", path=str(node.path)
        )

    def _run_node(self, node: Node) -> NodeResult:
        started = time.perf_counter()
        self.log.info("node started", extra={"node": node.name, "type": node.resource_type})
        if self.on_start:
            self.on_start(node)
        try:
            rows = self._execute(node)
        except BudgetExceededError:
            raise
        except CPOError as e:
            return self._error(node, started, self._describe(node, e) + self._unbuilt_hint(node))
        except Exception as e:  # a bug in a user's Python step is that node's failure
            return self._error(
                node,
                started,
                f"{self._step_line(node, e)}: {type(e).__name__}: {e}" + self._unbuilt_hint(node),
            )
        seconds = time.perf_counter() - started
        self.log.info(
            "node finished", extra={"node": node.name, "rows": rows, "seconds": round(seconds, 3)}
        )
        return NodeResult(
            node.name,
            node.resource_type,
            "success",
            seconds,
            rows,
            _verb(node, rows),
            str(node.path),
        )

    def _unbuilt_hint(self, node: Node) -> str:
        """Why a node that reads a never-built parent failed, and how to select it."""
        try:
            existing = set(self.db.relations())
        except Exception:  # only a hint: never hide the node's own error behind another
            return ""
        missing = [
            p
            for p in node.depends_on
            if p not in existing
            and p in self.graph.nodes
            and self.graph.nodes[p].materialized != "ephemeral"
        ]
        if not missing:
            return ""
        return (
            f"\n  {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not built yet: "
            f"select {'it' if len(missing) == 1 else 'them'} too, e.g. --select +{node.name}"
        )

    def _step_line(self, node: Node, error: Exception) -> str:
        """``udfs/step.py:LINE``: the step's own deepest frame, not the library's that raised."""
        source = str((self.config.root / node.path).resolve())
        lines = [
            frame.lineno
            for frame in traceback.extract_tb(error.__traceback__)
            if str(Path(frame.filename).resolve()) == source
        ]
        return f"{node.path}:{lines[-1]}" if lines else str(node.path)

    def _error(self, node: Node, started: float, message: str) -> NodeResult:
        self.log.error("node failed", extra={"node": node.name})
        return NodeResult(
            node.name,
            node.resource_type,
            "error",
            time.perf_counter() - started,
            None,
            message,
            str(node.path),
        )

    def _describe(self, node: Node, error: CPOError) -> str:
        where = error.path or str(node.path)
        line = f":{error.line}" if error.line else ""
        key = f"{error.key}: " if error.key else ""
        text = f"{where}{line}: {key}{error.message}"
        compiled = self.compiled_paths.get(node.name)
        if node.resource_type == MODEL and compiled and not error.path:
            text += f"\n  compiled SQL: {compiled}"
        return text

    def _execute(self, node: Node) -> int | None:
        if node.resource_type == SEED:
            return self.db.load_seed(
                node.name,
                self.config.root / node.path,
                column_types=node.config.get("column_types", {}) or {},
                required_columns=list(node.columns),
                display_path=str(node.path),
            )
        if node.resource_type == MODEL:
            if node.materialized == "ephemeral":
                return None
            key = node.config.get("unique_key")
            keys = [key] if isinstance(key, str) else list(key or [])
            sql = resolve_refs(node.sql, self.graph.nodes)
            materialized = node.materialized
            if materialized == "incremental" and node.config.get("full_refresh"):
                materialized = "table"  # --full-refresh: rebuild, do not merge
            return self.db.materialize_sql(node.name, sql, materialized, keys)
        if node.resource_type == PYTHON:
            module = load_module(self.config.root, node.path)
            ctx = Context(
                node=node,
                config=self.config,
                db=self.db,
                run_id=self.run_id,
                log=self.log,
                services=self.services,
            )
            with project_imports(self.config.path("udfs")):  # for imports inside model()
                frame = module.model(ctx)
            return self.db.materialize_frame(node.name, frame)
        raise AssertionError(f"cannot execute {node.resource_type}")

    def _run_test(self, test: Node) -> NodeResult:
        started = time.perf_counter()
        sql = resolve_refs(test.sql, self.graph.nodes)
        try:
            failures = self.db.execute(f"select count(*) from (\n{sql}\n)").fetchone()[0]
            _, sample = self._sample(test, sql) if failures else ([], [])
        except CPOError as e:
            return NodeResult(
                test.name,
                TEST,
                "error",
                time.perf_counter() - started,
                None,
                f"{test.path}: {e.message}",
                str(test.path),
            )
        seconds = time.perf_counter() - started
        if not failures:
            return NodeResult(test.name, TEST, "pass", seconds, 0, "", str(test.path))
        status = "warn" if test.severity == "warn" else "fail"
        examples = ", ".join(str(row[0] if len(row) == 1 else row) for row in sample)
        message = (
            f"{failures} failing row(s) in {quote(test.test.model) if test.test else ''}"
            f" (e.g. {examples}); compiled SQL: {self.compiled_paths.get(test.name, '')}"
        )
        return NodeResult(test.name, TEST, status, seconds, int(failures), message, str(test.path))

    def _sample(self, test: Node, sql: str) -> tuple[list[str], list[tuple]]:
        """A few failing rows, showing only what the test is about, with personal data hashed.

        A generic test shows its tested column (``not_null``: the column, never ``select *``);
        a singular test its own columns. A value is hashed with the project's salt (as
        `cpo.engine.logs.hash_id` does) when its column is PII (``meta: {pii: true}`` anywhere in
        the
        project), a customer id, or, in a singular test that reads PII, of unknown origin.
        """
        spec = test.test
        if spec is not None and spec.kind == "not_null" and spec.column:
            sql = f"select {quote(spec.column)} from (\n{sql}\n)"
        cursor = self.db.execute(f"select * from (\n{sql}\n) limit {TEST_SAMPLE_ROWS}")
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall()
        hidden = self._hidden_columns(test, columns)
        salt_env, root = self.config.log_salt_env, self.config.root
        rows = [
            tuple(
                f"#{hash_id(v, salt_env, root)}" if c in hidden and v is not None else v
                for c, v in zip(columns, row, strict=True)
            )
            for row in rows
        ]
        return columns, rows

    def _hidden_columns(self, test: Node, columns: Sequence[str]) -> set[str]:
        """The sample columns whose values must be hashed."""
        declared = set().union(*(pii_of(n.columns) for n in self.graph.nodes.values()))
        sensitive = {c for c in columns if c in declared or _is_customer_id(c)}
        spec = test.test
        if spec is None:
            return sensitive
        deps = [self.graph.nodes[n] for n in test.depends_on if n in self.graph.nodes]
        if spec.kind == "singular":
            if any(pii_of(n.columns) for n in deps):
                # The query's own columns: only those declared non-PII are shown as they are.
                known = {c for n in deps for c in n.columns} - declared
                sensitive |= {c for c in columns if c not in known or _is_customer_id(c)}
            return sensitive
        tested = {c for c in (spec.column, spec.args.get("field")) if c is not None}
        if tested & declared or any(_is_customer_id(c) for c in tested):
            sensitive |= set(columns) - {"occurrences"}
        return sensitive


def _is_customer_id(column: str) -> bool:
    return column.lower().endswith("customer_id")


def _verb(node: Node, rows: int | None) -> str:
    if node.resource_type == SEED:
        return f"loaded seed {node.name} ({rows} rows)"
    if node.materialized in ("view", "ephemeral"):
        return f"created {node.materialized} {node.name}"
    return f"created table {node.name} ({rows} rows)"

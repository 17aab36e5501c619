"""``target/manifest.json`` and ``target/run_results.json``, each with a schema version."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpo.engine.nodes import Node

MANIFEST_SCHEMA = "https://cpo.dev/schemas/manifest/v1.json"
RUN_RESULTS_SCHEMA = "https://cpo.dev/schemas/run-results/v1.json"


@dataclass(frozen=True)
class NodeResult:
    """The outcome of one node or test in a run.

    Attributes:
        status: success, error, skipped (nodes); pass, fail, warn, error, skipped (tests).
        rows: Rows in the built table, or failing rows for a test.
    """

    name: str
    resource_type: str
    status: str
    seconds: float = 0.0
    rows: int | None = None
    message: str = ""
    path: str = ""

    @property
    def failed(self) -> bool:
        """Whether this result makes the run fail (an error, or an error-severity test failure)."""
        return self.status in ("error", "fail")


def write_manifest(
    target: Path,
    project: str,
    nodes: Iterable[Node],
    tests: Iterable[Node],
    compiled_paths: Mapping[str, str],
) -> Path:
    """Write the manifest: every node, its dependencies, config and compiled SQL path."""
    entries = {}
    for node in [*nodes, *tests]:
        entries[node.name] = {
            "name": node.name,
            "resource_type": node.resource_type,
            "path": str(node.path),
            "depends_on": list(node.depends_on),
            "config": _jsonable(node.config),
            "description": node.description,
            "columns": _jsonable(node.columns),
            "compiled_path": compiled_paths.get(node.name),
            "test": _jsonable(asdict(node.test)) if node.test else None,
        }
    return _write(
        target / "manifest.json",
        {"metadata": _metadata(MANIFEST_SCHEMA, project), "nodes": entries},
    )


def write_run_results(
    target: Path,
    invocation_id: str,
    command: str,
    results: Iterable[NodeResult],
    seconds: float,
    *,
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write per-node status, timing, rows and message for one invocation, and the build
    summary of its AI steps (`cpo.reporting.summary`), if any."""
    payload = {
        "metadata": {**_metadata(RUN_RESULTS_SCHEMA, None), "invocation_id": invocation_id},
        "command": command,
        "elapsed_time": round(seconds, 3),
        "results": [asdict(r) for r in results],
        "summary": summary,
    }
    return _write(target / "run_results.json", payload)


def _metadata(schema: str, project: str | None) -> dict[str, Any]:
    from cpo import __version__

    meta = {
        "schema_version": schema,
        "cpo_version": __version__,
        "generated_at": datetime.now(UTC).isoformat(),
    }
    if project:
        meta["project_name"] = project
    return meta


def _write(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))

"""A static, offline documentation site under ``target/docs/``.

    index = write_docs(load_manifest(target), config, target)

``index.html`` draws the lineage of every node (an inline SVG laid out here by DAG depth: no
script, no CDN) and lists the nodes; ``nodes/<name>.html`` shows a node's description, its
columns (type from the built database, description and PII flag from ``schema.yml``), its data
tests with their last status, its row count, parents and children, and its compiled SQL.
Everything comes from ``target/manifest.json``, ``target/run_results.json`` and the active
target's database, read through the adapter protocol (`cpo.adapters.open_adapter`, read-only),
so the site documents a DuckDB or a Spark target alike; it works before a build too, just
without counts and types. The pages are the Jinja templates in ``cpo/engine/templates/docs/``,
rendered by the one sandboxed environment factory (`cpo.engine.templates`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpo.adapters import database_exists, open_adapter
from cpo.adapters.base import Adapter
from cpo.engine.config import ProjectConfig
from cpo.engine.templates import sandboxed_environment, template_loader
from cpo.errors import CPOError

TEMPLATES = Path(__file__).parent / "templates" / "docs"
"""The site's templates: ``index.html.j2``, ``node.html.j2`` and the shared ``docs.css.j2``."""

BOX_W, BOX_H, COL_GAP, ROW_GAP, MARGIN = 176, 28, 24, 34, 16
TYPE_COLORS = {"seed": "#1a7f37", "model": "#0969da", "python": "#8250df"}
TYPE_LABELS = {"seed": "seed", "model": "SQL model", "python": "Python step"}


@dataclass(frozen=True)
class Box:
    """A node's place in the lineage drawing."""

    name: str
    resource_type: str
    x: int
    y: int
    depth: int
    ephemeral: bool


@dataclass(frozen=True)
class Layout:
    """The lineage drawing: boxes, edges (parent, child) and the canvas size."""

    boxes: dict[str, Box]
    edges: tuple[tuple[str, str], ...]
    width: int
    height: int


def layout(
    nodes: Mapping[str, Sequence[str]],
    types: Mapping[str, str] | None = None,
    ephemeral: frozenset[str] = frozenset(),
) -> Layout:
    """Place nodes in rows by depth (longest path from a source, sources on top) and order each
    row by the mean position of the node's parents, which keeps most edges short and uncrossed.

    Args:
        nodes: node -> the nodes it depends on (unknown parents are ignored).
        types: node -> resource type (for colours).
        ephemeral: nodes drawn dashed (never materialised).
    """
    types = types or {}
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            parents = [p for p in nodes[name] if p in nodes and p not in seen]
            depth[name] = 1 + max((depth_of(p, seen | {name}) for p in parents), default=-1)
        return depth[name]

    for name in nodes:
        depth_of(name)
    columns: dict[int, list[str]] = {}
    for name in sorted(nodes):
        columns.setdefault(depth[name], []).append(name)
    row: dict[str, float] = {}
    for d in sorted(columns):
        for sweep_name in columns[d]:
            parents = [row[p] for p in nodes[sweep_name] if p in row]
            row[sweep_name] = sum(parents) / len(parents) if parents else len(row) * 0.01
        columns[d].sort(key=lambda n: (row[n], n))
        for i, name in enumerate(columns[d]):
            row[name] = float(i)
    widest = max((len(c) for c in columns.values()), default=0)
    boxes = {}
    for d, names in columns.items():
        # Centre each row under the widest one.
        offset = (widest - len(names)) * (BOX_W + COL_GAP) // 2
        for i, name in enumerate(names):
            boxes[name] = Box(
                name,
                types.get(name, "model"),
                MARGIN + offset + i * (BOX_W + COL_GAP),
                MARGIN + d * (BOX_H + ROW_GAP),
                d,
                name in ephemeral,
            )
    edges = tuple((p, n) for n in sorted(nodes) for p in nodes[n] if p in nodes)
    width = 2 * MARGIN + widest * (BOX_W + COL_GAP) - COL_GAP
    height = 2 * MARGIN + len(columns) * (BOX_H + ROW_GAP) - ROW_GAP
    return Layout(boxes, edges, max(width, 0), max(height, 0))


def write_docs(
    manifest: Mapping[str, Any],
    database: ProjectConfig | Adapter,
    target_dir: Path,
    out_dir: Path | None = None,
) -> Path:
    """Write the site to ``<target_dir>/docs/`` (replacing it) and return ``index.html``.

    Args:
        manifest: ``target/manifest.json`` as loaded (`cpo.engine.export.load_manifest`).
        database: The project's configuration, whose active target's database (DuckDB or Spark)
            is opened read-only when it exists, or an adapter already open (left open). Row
            counts and column types come from it.
        target_dir: The project's ``target/`` folder (run results, compiled SQL).
        out_dir: Where to write the site instead of ``<target_dir>/docs``.

    Raises:
        CPOError: the folder cannot be written.
    """
    all_nodes = manifest.get("nodes") or {}
    nodes = {k: v for k, v in all_nodes.items() if v.get("resource_type") != "test"}
    tests = [v for v in all_nodes.values() if v.get("resource_type") == "test"]
    statuses = _test_statuses(target_dir)
    built = _introspect(database, list(nodes))
    drawing = layout(
        {n: list(v.get("depends_on") or []) for n, v in nodes.items()},
        {n: v.get("resource_type", "model") for n, v in nodes.items()},
        frozenset(
            n
            for n, v in nodes.items()
            if (v.get("config") or {}).get("materialized") == "ephemeral"
        ),
    )
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for parent, child in drawing.edges:
        children[parent].append(child)
    pages = {
        name: _page_data(name, node, tests, statuses, built.get(name), children[name], target_dir)
        for name, node in nodes.items()
    }
    env = sandboxed_environment(template_loader(TEMPLATES), autoescape=True, filters={"slug": slug})
    common = {
        "project": (manifest.get("metadata") or {}).get("project_name", "project"),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "colors": TYPE_COLORS,
        "labels": TYPE_LABELS,
    }
    out = Path(out_dir) if out_dir else Path(target_dir) / "docs"
    staging = out.with_name(f".{out.name}-tmp")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "nodes").mkdir(parents=True)
        (staging / "index.html").write_text(
            env.get_template("index.html.j2").render(
                **common,
                layout=drawing,
                pages=pages,
                edge_path=_edge_path,
                has_database=bool(built),
            ),
            encoding="utf-8",
        )
        node_template = env.get_template("node.html.j2")
        for name, page in pages.items():
            (staging / "nodes" / f"{slug(name)}.html").write_text(
                node_template.render(**common, page=page), encoding="utf-8"
            )
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise CPOError(f"cannot write the docs site to {out}: {e.strerror or e}") from e
    return out / "index.html"


def slug(name: str) -> str:
    """A file name for a node's page."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _edge_path(layout_: Layout, parent: str, child: str) -> str:
    a, b = layout_.boxes[parent], layout_.boxes[child]
    x1, y1 = a.x + BOX_W / 2, a.y + BOX_H
    x2, y2 = b.x + BOX_W / 2, b.y
    bend = max((y2 - y1) / 2, 16)
    return f"M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2}"


def _test_statuses(target_dir: Path) -> dict[str, str]:
    try:
        payload = json.loads((Path(target_dir) / "run_results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {
        r["name"]: r.get("status", "")
        for r in payload.get("results") or []
        if r.get("resource_type") == "test"
    }


@dataclass(frozen=True)
class Built:
    """What the database says about a relation."""

    kind: str
    rows: int
    columns: tuple[tuple[str, str], ...]


def _introspect(database: ProjectConfig | Adapter, names: Sequence[str]) -> dict[str, Built]:
    """Kind, row count and columns of each built node; {} when there is no database yet."""
    if not isinstance(database, ProjectConfig):
        return _describe(database, names)
    try:
        if not database_exists(database):
            return {}
        db = open_adapter(database, read_only=True)
    except CPOError:
        return {}
    try:
        return _describe(db, names)
    finally:
        db.close()


def _describe(db: Adapter, names: Sequence[str]) -> dict[str, Built]:
    relations = db.relations()
    return {
        n: Built(relations[n], db.count(n), tuple(db.columns(n))) for n in names if n in relations
    }


def _page_data(
    name: str,
    node: Mapping[str, Any],
    tests: Sequence[Mapping[str, Any]],
    statuses: Mapping[str, str],
    built: Built | None,
    children: Sequence[str],
    target_dir: Path,
) -> dict[str, Any]:
    documented = node.get("columns") or {}
    own_tests = [t for t in tests if (t.get("test") or {}).get("model") == name]
    by_column: dict[str | None, list[str]] = {}
    for t in own_tests:
        by_column.setdefault((t.get("test") or {}).get("column"), []).append(
            (t.get("test") or {}).get("kind", "test")
        )
    names = [c for c, _ in built.columns] if built else []
    names += [c for c in documented if c not in names]
    types = dict(built.columns) if built else {}
    columns = [
        {
            "name": c,
            "type": types.get(c, ""),
            "description": (documented.get(c) or {}).get("description", ""),
            "pii": bool(((documented.get(c) or {}).get("meta") or {}).get("pii")),
            "tests": by_column.get(c, []),
            "documented": c in documented,
        }
        for c in names
    ]
    config = node.get("config") or {}
    return {
        "name": name,
        "type": node.get("resource_type", "model"),
        "path": node.get("path", ""),
        "description": node.get("description") or "",
        "materialized": config.get(
            "materialized", "table" if node.get("resource_type") != "seed" else "seed"
        ),
        "tags": config.get("tags") or [],
        "parents": list(node.get("depends_on") or []),
        "children": list(children),
        "columns": columns,
        "tests": [
            {
                "name": t["name"],
                "kind": (t.get("test") or {}).get("kind", ""),
                "column": (t.get("test") or {}).get("column"),
                "severity": (t.get("test") or {}).get("severity", "error"),
                "status": statuses.get(t["name"], "not run"),
            }
            for t in own_tests
        ],
        "rows": built.rows if built else None,
        "relation": built.kind if built else None,
        "sql": _compiled_sql(node, target_dir),
    }


def _compiled_sql(node: Mapping[str, Any], target_dir: Path) -> str | None:
    relative = node.get("compiled_path")
    if not relative:
        return None
    path = Path(target_dir).parent / relative
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None

"""A static, offline documentation site under ``target/docs/``.

    index = write_docs(load_manifest(target), config.database_path, target)

``index.html`` draws the lineage of every node (an inline SVG laid out here by DAG depth: no
script, no CDN) and lists the nodes; ``nodes/<name>.html`` shows a node's description, its
columns (type from the built database, description and PII flag from ``schema.yml``), its data
tests with their last status, its row count, parents and children, and its compiled SQL.
Everything comes from ``target/manifest.json``, ``target/run_results.json`` and the database
(opened read-only); the site works before a build too, just without counts and types.
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

import jinja2

from cpo.adapters.duckdb import Database
from cpo.errors import CPOError

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
    manifest: Mapping[str, Any], database_path: Path, target_dir: Path, out_dir: Path | None = None
) -> Path:
    """Write the site to ``<target_dir>/docs/`` (replacing it) and return ``index.html``.

    Args:
        manifest: ``target/manifest.json`` as loaded (`cpo.engine.export.load_manifest`).
        database_path: The built database; row counts and column types come from it when it
            exists.
        target_dir: The project's ``target/`` folder (run results, compiled SQL).
        out_dir: Where to write the site instead of ``<target_dir>/docs``.

    Raises:
        CPOError: the folder cannot be written.
    """
    all_nodes = manifest.get("nodes") or {}
    nodes = {k: v for k, v in all_nodes.items() if v.get("resource_type") != "test"}
    tests = [v for v in all_nodes.values() if v.get("resource_type") == "test"]
    statuses = _test_statuses(target_dir)
    built = _introspect(database_path, list(nodes))
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
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["slug"] = slug
    common = {
        "project": (manifest.get("metadata") or {}).get("project_name", "project"),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "css": CSS,
        "colors": TYPE_COLORS,
        "labels": TYPE_LABELS,
    }
    out = Path(out_dir) if out_dir else Path(target_dir) / "docs"
    staging = out.with_name(f".{out.name}-tmp")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "nodes").mkdir(parents=True)
        (staging / "index.html").write_text(
            env.from_string(INDEX).render(
                **common,
                layout=drawing,
                pages=pages,
                edge_path=_edge_path,
                has_database=bool(built),
            ),
            encoding="utf-8",
        )
        node_template = env.from_string(NODE)
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


def _introspect(database_path: Path, names: Sequence[str]) -> dict[str, Built]:
    if not Path(database_path).exists():
        return {}
    try:
        db = Database(database_path, read_only=True)
    except CPOError:
        return {}
    try:
        relations = db.relations()
        return {
            n: Built(relations[n], db.count(n), tuple(db.columns(n)))
            for n in names
            if n in relations
        }
    finally:
        db.close()


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


CSS = """
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;
  color:#1f2328; background:#f6f8fa; }
header { background:#24292f; color:#fff; padding:16px 28px; }
header h1 { margin:0; font-size:20px; } header a { color:#fff; }
header .meta { color:#d1d9e0; font-size:13px; }
main { max-width:1240px; margin:0 auto; padding:16px 28px 40px; }
section { background:#fff; border:1px solid #d1d9e0; border-radius:8px; padding:16px 20px;
  margin:16px 0; }
h2 { font-size:16px; margin:0 0 10px; }
.lineage { overflow:auto; border:1px solid #d1d9e0; border-radius:6px; background:#fbfcfd; }
.lineage text { font:12px -apple-system,"Segoe UI",Helvetica,Arial,sans-serif; fill:#fff; }
.lineage a:hover rect { opacity:.85; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid #d1d9e0; vertical-align:top; }
th { background:#f6f8fa; } td.n { text-align:right; font-variant-numeric:tabular-nums; }
.tag { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; color:#fff; }
.pii { background:#cf222e; } .muted { color:#59636e; }
.status-pass, .status-success { color:#1a7f37; } .status-fail, .status-error { color:#cf222e; }
.status-warn { color:#9a6700; }
pre { background:#f6f8fa; padding:10px; border-radius:6px; overflow:auto; font-size:12px; }
.legend span { margin-right:14px; }
"""

INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{{ project }} · docs</title><style>{{ css | safe }}</style></head>
<body><header><h1>{{ project }}: project documentation</h1>
<div class="meta">{{ pages | length }} nodes · generated {{ generated_at }}</div></header>
<main>
{% if not has_database %}<section><b>No built database yet</b>: row counts and column types
appear after <code>python runner.py build</code>.</section>{% endif %}
<section id="lineage"><h2>Lineage</h2>
<p class="legend">{% for t, c in colors.items() %}<span>
<span class="tag" style="background:{{ c }}">{{ labels[t] }}</span></span>{% endfor %}
<span class="muted">sources at the top, arrows point downstream · dashed: ephemeral · click a
node for its page</span></p>
<div class="lineage">
<svg id="lineage-graph" xmlns="http://www.w3.org/2000/svg" width="{{ layout.width }}"
height="{{ layout.height }}"
     viewBox="0 0 {{ layout.width }} {{ layout.height }}" role="img" aria-label="Lineage graph">
<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7"
orient="auto">
<path d="M0,0 L8,4 L0,8 z" fill="#8c959f"/></marker></defs>
{% for parent, child in layout.edges %}
<path class="edge" data-from="{{ parent }}" data-to="{{ child }}"
d="{{ edge_path(layout, parent, child) }}"
  fill="none" stroke="#8c959f" stroke-width="1.2" marker-end="url(#arrow)"/>
{% endfor %}
{% for box in layout.boxes.values() %}<a href="nodes/{{ box.name | slug }}.html">
<g class="node" id="node-{{ box.name | slug }}">
<title>{{ box.name }} ({{ labels.get(box.resource_type, box.resource_type) }})</title>
<rect x="{{ box.x }}" y="{{ box.y }}" width="176" height="28" rx="6"
fill="{{ colors.get(box.resource_type, '#57606a') }}"
  {% if box.ephemeral %}fill-opacity="0.55" stroke="#24292f" stroke-dasharray="4 3"{% endif %}/>
<text x="{{ box.x + 8 }}" y="{{ box.y + 18 }}">
{{ box.name if box.name | length <= 24 else box.name[:23] ~ '…' }}</text></g></a>
{% endfor %}
</svg></div></section>
<section id="nodes"><h2>Nodes</h2>
<table><thead><tr><th>node</th><th>type</th><th>materialized</th><th class="n">rows</th>
<th class="n">columns</th><th class="n">tests</th><th>description</th></tr></thead>
<tbody>{% for p in pages.values() | sort(attribute='name') %}<tr><td>
<a href="nodes/{{ p.name | slug }}.html">{{ p.name }}</a></td>
<td>{{ labels.get(p.type, p.type) }}</td><td>{{ p.materialized }}</td>
<td class="n">{{ '{:,}'.format(p.rows) if p.rows is not none else '—' }}</td><td class="n">
{{ p.columns | length }}</td>
<td class="n">{{ p.tests | length }}</td><td>{{ p.description | truncate(140) }}</td></tr>
{% endfor %}</tbody></table>
</section></main></body></html>
"""

NODE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{{ page.name }} · {{ project }} docs</title><style>{{ css | safe }}</style></head>
<body><header><h1>{{ page.name }}</h1>
<div class="meta"><a href="../index.html">{{ project }}
</a> · {{ labels.get(page.type, page.type) }} ·
{{ page.materialized }} · <code>{{ page.path }}</code></div></header>
<main>
<section id="about"><h2>Description</h2>
<p>{{ page.description or 'No description yet: add one in schema.yml.' }}</p>
<table>
<tr><th>rows</th><td>{{ '{:,}'.format(page.rows) if page.rows is not none else 'not built' }}
{% if page.relation %} ({{ page.relation }}){% endif %}</td></tr>
<tr><th>depends on</th><td>{% for p in page.parents %}<a href="{{ p | slug }}.html">{{ p }}</a>
{{ ', ' if not loop.last }}{% else %}—{% endfor %}</td></tr>
<tr><th>used by</th><td>{% for c in page.children %}<a href="{{ c | slug }}.html">{{ c }}</a>
{{ ', ' if not loop.last }}{% else %}—{% endfor %}</td></tr>
{% if page.tags %}<tr><th>tags</th><td>{{ page.tags | join(', ') }}</td></tr>{% endif %}
</table></section>
<section id="columns"><h2>Columns ({{ page.columns | length }})</h2>
<table><thead><tr><th>column</th><th>type</th><th>description</th><th>tests</th></tr></thead><tbody>
{% for c in page.columns %}<tr><td><code>{{ c.name }}</code>
{% if c.pii %} <span class="tag pii">PII</span>{% endif %}</td>
<td>{{ c.type or '—' }}</td><td>{{ c.description or ('' if c.documented else 'undocumented') }}
</td><td>{{ c.tests | join(', ') }}</td></tr>
{% endfor %}</tbody></table></section>
<section id="tests"><h2>Data tests ({{ page.tests | length }})</h2>
{% if page.tests %}<table><thead><tr><th>test</th><th>kind</th><th>column</th><th>severity</th>
<th>last status</th></tr></thead><tbody>
{% for t in page.tests %}<tr><td>{{ t.name }}</td><td>{{ t.kind }}</td><td>{{ t.column or '—' }}
</td><td>{{ t.severity }}</td>
<td class="status-{{ t.status }}">{{ t.status }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="muted">No data tests.</p>{% endif %}</section>
{% if page.sql %}<section id="sql"><h2>Compiled SQL</h2><pre>{{ page.sql }}</pre></section>
{% endif %}
</main></body></html>
"""

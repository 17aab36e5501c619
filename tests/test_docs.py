"""`cpo.engine.docs`: the offline docs site (lineage SVG, node pages with columns, tests,
counts)."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import SecurityError

from cpo.engine.docs import BOX_H, BOX_W, layout, slug, write_docs
from cpo.engine.export import load_manifest
from cpo.engine.project import Project
from cpo.engine.templates import sandboxed_environment, template_loader
from tests.sample import copy_sample_project


@pytest.fixture(scope="module")
def site(sample_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "docs"
    index = write_docs(
        load_manifest(sample_build / "target"),
        Project.load(sample_build).config,
        sample_build / "target",
        out_dir=out,
    )
    assert index == out / "index.html"
    return out


def graph_nodes(sample_build: Path) -> dict[str, dict]:
    nodes = load_manifest(sample_build / "target")["nodes"]
    return {n: v for n, v in nodes.items() if v["resource_type"] != "test"}


def test_lineage_draws_every_node_and_edge(site: Path, sample_build: Path) -> None:
    html = (site / "index.html").read_text(encoding="utf-8")
    nodes = graph_nodes(sample_build)
    drawn = set(re.findall(r'<g class="node" id="node-([^"]+)">', html))
    assert drawn == {slug(n) for n in nodes}
    edges = set(re.findall(r'data-from="([^"]+)" data-to="([^"]+)"', html))
    assert edges == {(p, n) for n, v in nodes.items() for p in v["depends_on"] if p in nodes}
    assert ("assignments", "fact_assignment") in edges
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched


def test_every_node_has_a_page_with_columns_types_and_counts(
    site: Path, sample_build: Path
) -> None:
    for name in graph_nodes(sample_build):
        assert (site / "nodes" / f"{slug(name)}.html").exists(), name
    page = (site / "nodes" / "dim_customer.html").read_text(encoding="utf-8")
    assert "One row per customer: profile, RFM scores" in page
    assert re.search(r"<tr><th>rows</th><td>5,000\s*\(view\)</td></tr>", page)
    assert re.search(
        r'<code>email</code>\s*<span class="tag pii">PII</span></td>\s*'
        r"<td>VARCHAR</td>",
        page,
    )
    assert re.search(
        r"<code>customer_id</code>\s*</td>\s*<td>VARCHAR</td>\s*<td>Customer key.\s*</td>\s*"
        r"<td>unique, not_null</td>",
        page,
    )
    assert '<td class="status-pass">pass</td>' in page
    assert 'href="stg_customers.html"' in page  # depends on
    assert "Compiled SQL" in page and "qualify row_number()" in page


def test_docs_before_any_build(tmp_path: Path) -> None:
    project = copy_sample_project(tmp_path / "fresh")
    Project.load(project).compile()
    index = write_docs(
        load_manifest(project / "target"), Project.load(project).config, project / "target"
    )
    html = index.read_text(encoding="utf-8")
    assert index == project / "target" / "docs" / "index.html"
    assert "No built database yet" in html
    page = (project / "target" / "docs" / "nodes" / "dim_customer.html").read_text()
    assert "not built" in page


def test_layout_puts_parents_above_children_without_overlaps() -> None:
    nodes = {"a": [], "b": ["a"], "c": ["a", "b"], "d": [], "e": ["c", "d"]}
    drawing = layout(nodes)
    boxes = drawing.boxes
    assert [boxes[n].depth for n in "abcde"] == [0, 1, 2, 0, 3]
    for parent, child in drawing.edges:
        assert boxes[parent].y + BOX_H < boxes[child].y
    positions = [(b.x, b.y) for b in boxes.values()]
    assert len(set(positions)) == len(positions)
    assert all(
        b.x + BOX_W <= drawing.width and b.y + BOX_H <= drawing.height for b in boxes.values()
    )


def test_the_site_escapes_text_from_the_project(sample_build: Path, tmp_path: Path) -> None:
    manifest = load_manifest(sample_build / "target")
    manifest["nodes"]["dim_customer"]["description"] = "<script>alert(1)</script>"
    write_docs(manifest, Project.load(sample_build).config, sample_build / "target", tmp_path)
    page = (tmp_path / "nodes" / "dim_customer.html").read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_environment_factory_is_sandboxed_strict_and_escapes_html(tmp_path: Path) -> None:
    (tmp_path / "page.html.j2").write_text("<p>{{ text }}</p>", encoding="utf-8")
    html = sandboxed_environment(template_loader(tmp_path), autoescape=True)
    assert html.get_template("page.html.j2").render(text="<b>") == "<p>&lt;b&gt;</p>"
    text = sandboxed_environment(filters={"shout": str.upper})
    assert text.from_string("{{ t | shout }}").render(t="<b>") == "<B>"
    with pytest.raises(jinja2.UndefinedError):
        text.from_string("{{ missing }}").render()
    with pytest.raises(SecurityError):
        text.from_string("{{ ''.__class__.__mro__ }}").render()
    with pytest.raises(SecurityError):
        text.from_string("{{ items.append(4) }}").render(items=[1])

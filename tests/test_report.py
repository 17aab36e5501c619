"""`cpo.reporting.report`: a self-contained, escaped, PII-free HTML report that never crashes."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pandas as pd
import pytest
from jinja2.sandbox import SecurityError

from cpo.adapters.duckdb import Database
from cpo.engine.project import Project
from cpo.experiments.settings import EVENTS
from cpo.reporting.data import read_report_data
from cpo.reporting.report import PLOT_IDS, ReportData, verdict, write_report
from cpo.reporting.sections import (
    REPORT_SECTIONS,
    ReportSection,
    register_section,
    unregister_section,
)
from cpo.reporting.tables import FUNNEL_EVENTS
from tests.sample import copy_sample_project, query
from tests.test_export import find_pii


@pytest.fixture(scope="module")
def report_html(sample_build: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    path = write_report(Project.load(sample_build).config, out=out)
    assert path == out
    return out.read_text(encoding="utf-8")


def editable_copy(sample_build: Path, destination: Path) -> Path:
    """A copy of the built sample (database and target/ included) that a test may change."""
    shutil.copytree(sample_build, destination, ignore=shutil.ignore_patterns("logs", ".cpo"))
    return destination


def test_report_has_every_section_and_plot(report_html: str, sample_build: Path) -> None:
    for plot in PLOT_IDS:
        assert re.search(rf'<img id="{plot}" [^>]*src="data:image/svg\+xml;base64,', report_html)
    for section in (
        "decision",
        "results",
        "segments",
        "funnel",
        "srm",
        "freshness",
        "power",
        "safety",
        "variants",
        "calls",
    ):
        assert f'id="{section}"' in report_html
    run_id = json.loads((sample_build / "target" / "run_results.json").read_text())["metadata"][
        "invocation_id"
    ]
    assert run_id in report_html
    assert "Decision: " in report_html and "exp_2026_winter" in report_html


def test_report_is_self_contained(report_html: str) -> None:
    # No script, stylesheet link or remote fetch: it opens offline, and the CSP forbids any.
    assert "<script" not in report_html
    assert "<link" not in report_html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", report_html)
    assert "default-src 'none'" in report_html


def test_report_holds_no_pii(report_html: str) -> None:
    assert find_pii(report_html) == []


def test_report_resolves_citations_to_titles(report_html: str, sample_build: Path) -> None:
    db = Database(sample_build / "cpo.duckdb", read_only=True)
    try:
        _, rows = db.fetch("""
            select d.title, d.document_id
            from approved_variants a join variants v using (variant_id),
                unnest(v.citations) as c(document_id) join stg_content d using (document_id)
            limit 1""")
    finally:
        db.close()
    title, document_id = rows[0]
    assert f"{title} ({document_id})".replace("&", "&amp;").replace("'", "&#39;") in report_html


def test_report_escapes_text_from_the_database(sample_build: Path, tmp_path: Path) -> None:
    project = editable_copy(sample_build, tmp_path / "p")
    db = Database(project / "cpo.duckdb")
    try:
        db.execute(
            "update variants set subject = '<script>alert(1)</script>' "
            "where variant_id in (select variant_id from approved_variants)"
        )
    finally:
        db.close()
    html = write_report(Project.load(project).config).read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_report_before_any_build_says_so(tmp_path: Path) -> None:
    project = copy_sample_project(tmp_path / "fresh")
    path = write_report(Project.load(project).config)
    assert path == project / "target" / "report.html"
    html = path.read_text(encoding="utf-8")
    assert "No database yet: cpo.duckdb does not exist." in html
    assert "<img" not in html


def test_report_with_no_events_says_so(sample_build: Path, tmp_path: Path) -> None:
    project = editable_copy(sample_build, tmp_path / "p")
    db = Database(project / "cpo.duckdb")
    try:
        db.execute("delete from stg_events")
    finally:
        db.close()
    html = write_report(Project.load(project).config).read_text(encoding="utf-8")
    assert "No outcome events yet" in html
    assert 'id="plot-funnel"' not in html
    assert 'id="plot-srm"' in html  # assignments are still reported


def test_report_without_experiment_results_says_so(sample_build: Path, tmp_path: Path) -> None:
    project = editable_copy(sample_build, tmp_path / "p")
    db = Database(project / "cpo.duckdb")
    try:
        db.execute("drop table experiment_results")
    finally:
        db.close()
    html = write_report(Project.load(project).config).read_text(encoding="utf-8")
    assert "No experiment results yet" in html
    assert "Decision: No decision yet" in html
    assert 'id="plot-forest"' not in html and 'id="plot-safety"' in html


def test_report_without_a_power_column_leaves_power_out(sample_build: Path, tmp_path: Path) -> None:
    """Results from an older or custom model without `power`: no power section, no crash."""
    project = editable_copy(sample_build, tmp_path / "p")
    db = Database(project / "cpo.duckdb")
    try:
        db.execute("alter table experiment_results drop column power")
    finally:
        db.close()
    html = write_report(Project.load(project).config).read_text(encoding="utf-8")
    assert 'id="plot-forest"' in html  # the results are still reported
    assert 'id="power"' not in html and 'id="plot-power"' not in html


def data_with(rows: list[dict]) -> ReportData:
    frame = pd.DataFrame(rows)
    for column in ("segment_id",):
        frame[column] = None
    return ReportData(
        project="p",
        experiment_id="e",
        control="control",
        alpha=0.05,
        min_power=0.8,
        generated_at="now",
        run={},
        has_database=True,
        results=frame,
    )


def row(arm: str, decision: str, estimate: float, metric: str = "open_rate") -> dict:
    return {
        "experiment_id": "e",
        "metric": metric,
        "metric_role": "primary",
        "arm": arm,
        "estimate": estimate,
        "decision": decision,
        "decision_reason": f"{arm} reason",
    }


def test_verdict_ships_the_best_shippable_arm() -> None:
    result = verdict(
        data_with([row("a", "ship", 0.05), row("b", "ship", 0.09), row("c", "no_ship", 0.2)])
    )
    assert (result.decision, result.title) == ("ship", "Ship b")
    assert result.reasons[0] == "a: ship: a reason"


def test_verdict_is_invalid_when_any_arm_is_invalid() -> None:
    result = verdict(data_with([row("a", "ship", 0.05), row("b", "invalid", 0.0)]))
    assert result.decision == "invalid"


def test_verdict_is_inconclusive_or_no_ship_otherwise() -> None:
    assert (
        verdict(data_with([row("a", "no_ship", 0.0), row("b", "no_ship", 0.0)])).decision
        == "no_ship"
    )
    assert (
        verdict(data_with([row("a", "no_ship", 0.0), row("b", "inconclusive", 0.1)])).decision
        == "inconclusive"
    )


def test_report_on_simulated_outcomes_has_a_banner_and_never_ships(report_html: str) -> None:
    # The sample project's outcomes are simulated: the banner says so and nothing is shipped.
    assert 'id="simulated-banner"' in report_html
    assert "Decision: No decision: the outcomes are simulated" in report_html
    assert "Decision: Ship" not in report_html


def test_report_shows_the_segment_policy(report_html: str, sample_build: Path) -> None:
    policy = query(sample_build, "select segment_id, send_arm from segment_policy")
    assert not policy.empty
    section = report_html[report_html.index('id="segment-policy"') :]
    section = section[: section.index("</section>")]
    assert section.count("<tr><td>") == len(policy)


# -- registered sections, the template sandbox, settings and the adapter ------------------------


@pytest.fixture
def sections_restored() -> Iterator[list[ReportSection]]:
    """The registered sections, put back as they were after the test."""
    saved = list(REPORT_SECTIONS)
    yield REPORT_SECTIONS
    REPORT_SECTIONS[:] = saved


def test_a_registered_section_is_rendered_in_place_and_escaped(
    sample_build: Path, tmp_path: Path, sections_restored: list[ReportSection]
) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "holdout.html.j2").write_text(
        '<section id="holdout"><h2>Holdout</h2><p>{{ note }}</p>'
        "<p>control {{ d.control }}: {{ share | pct(0) }}</p></section>\n",
        encoding="utf-8",
    )
    register_section(
        ReportSection(
            "holdout",
            "holdout.html.j2",
            lambda d: {"note": "<b>hostile</b>", "share": 0.25},
            directory=folder,
        ),
        before="calls",
    )
    register_section(ReportSection("nothing", "holdout.html.j2", lambda d: None, directory=folder))
    html = write_report(Project.load(sample_build).config, out=tmp_path / "r.html").read_text(
        encoding="utf-8"
    )
    assert html.index('id="variants"') < html.index('id="holdout"') < html.index('id="calls"')
    assert html.count('id="holdout"') == 1  # the section whose data is None is left out
    assert "&lt;b&gt;hostile&lt;/b&gt;" in html and "<b>hostile</b>" not in html
    assert "<p>control control: 25%</p>" in html
    assert [s.name for s in sections_restored][-3:] == ["holdout", "calls", "nothing"]


def test_register_section_refuses_clashes_and_unknown_anchors(
    sections_restored: list[ReportSection],
) -> None:
    section = ReportSection("extra", "extra.html.j2")
    assert register_section(section, after="decision") is section
    assert [s.name for s in sections_restored][:2] == ["decision", "extra"]
    again = ReportSection("extra", "extra.html.j2", lambda d: {"n": 1})
    register_section(again)  # the same section again (a new data function): replaced in place
    assert [s.name for s in sections_restored].count("extra") == 1
    assert sections_restored[1] is again
    with pytest.raises(ValueError, match="already registered"):
        register_section(ReportSection("extra", "other.html.j2"))
    with pytest.raises(ValueError, match="no report section named 'nope'"):
        register_section(ReportSection("more", "more.html.j2"), before="nope")
    with pytest.raises(ValueError, match="not both"):
        register_section(ReportSection("more", "m.html.j2"), before="calls", after="calls")


def test_section_templates_run_in_the_sandbox(
    sample_build: Path, tmp_path: Path, sections_restored: list[ReportSection]
) -> None:
    (tmp_path / "evil.html.j2").write_text("{{ d.__class__.__mro__ }}", encoding="utf-8")
    (tmp_path / "typo.html.j2").write_text("{{ d.no_such_field }}", encoding="utf-8")
    config = Project.load(sample_build).config
    first = REPORT_SECTIONS[0].name  # rendered first, so no plot is drawn before it fails
    register_section(ReportSection("evil", "evil.html.j2", directory=tmp_path), before=first)
    with pytest.raises(SecurityError):
        write_report(config, out=tmp_path / "r.html")
    unregister_section("evil")
    register_section(ReportSection("typo", "typo.html.j2", directory=tmp_path), before=first)
    with pytest.raises(jinja2.UndefinedError):
        write_report(config, out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_the_experiment_settings_are_read_through_their_model(sample_build: Path) -> None:
    data = read_report_data(Project.load(sample_build).config)
    assert data.weights == {
        "control": 0.25,
        "urgent": 0.25,
        "informational": 0.25,
        "friendly": 0.25,
    }
    assert data.metric_settings["open_rate"] == {"mde": 0.10, "direction": "increase"}
    assert data.metric_settings["unsubscribe_rate"]["direction"] == "decrease"
    # A metric without its own mde takes the experiment's (ExperimentVars' rule).
    metric = {"name": "opens", "type": "proportion", "role": "primary", "event": "open"}
    overridden = Project.load(
        sample_build, vars={"experiment": {"mde": 0.3, "alpha": 0.01, "metrics": [metric]}}
    ).config
    data = read_report_data(overridden)
    assert data.metric_settings == {"opens": {"mde": 0.3, "direction": "increase"}}
    assert data.alpha == 0.01 and data.min_power == 0.8


def test_the_funnel_has_a_column_per_experiment_event(sample_build: Path) -> None:
    data = read_report_data(Project.load(sample_build).config)
    assert tuple(e for e in EVENTS if e != "unsubscribe") == FUNNEL_EVENTS
    assert data.funnel is not None
    assert list(data.funnel.columns) == ["arm", "assigned", *FUNNEL_EVENTS]
    assert (data.funnel["delivered"] >= data.funnel["open"]).all()


def test_the_report_reads_the_database_only_through_the_adapter() -> None:
    # So `report` and `docs` work on any target (DuckDB, Spark): no module opens DuckDB itself.
    package = Path(__file__).resolve().parents[1] / "cpo"
    report = ("data", "verdict", "plots", "sections", "tables", "report")
    readers = [package / "reporting" / f"{m}.py" for m in report] + [package / "engine" / "docs.py"]
    offenders = [
        p.name
        for p in readers
        if re.search(r"^\s*(from|import) (duckdb|cpo\.adapters\.duckdb)\b", p.read_text(), re.M)
    ]
    assert offenders == []


def test_every_template_file_is_packaged() -> None:
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["package-data"]["cpo"]
    templates = [p.relative_to(root / "cpo") for p in (root / "cpo").rglob("templates/**/*.j2")]
    assert len(templates) >= 15
    for template in templates:
        assert any(
            fnmatch.fnmatch(str(template), pattern.removeprefix("**/"))
            or fnmatch.fnmatch(str(template), pattern)
            for pattern in patterns
        ), template

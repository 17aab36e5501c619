"""`cpo.reporting.report`: a self-contained, escaped, PII-free HTML report that never crashes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cpo.adapters.duckdb import Database
from cpo.engine.project import Project
from cpo.reporting.report import PLOT_IDS, ReportData, verdict, write_report
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

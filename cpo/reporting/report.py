"""The experiment report: one self-contained HTML file, from the database and artifacts only.

    path = write_report(project.config)            # target/report.html

Everything comes from the built database (read-only, through the adapter: DuckDB or Spark) and
``target/run_results.json``: the decision and why, a forest plot of each arm's lift per metric,
a per-segment heatmap, the funnel per arm, the SRM check, power achieved versus needed, safety
outcomes, the approved variants with their cited documents, provider calls and costs, and data
freshness. Plots are matplotlib SVGs embedded as data URIs, so the file opens offline with no
script and no network fetch. The page is Jinja templates (``cpo/reporting/templates/``) rendered
in the one sandboxed, autoescaping environment (`cpo.engine.templates`). No customer-level data
is read: no names, emails or rendered messages, only aggregates and the variant templates (merge
tags unrendered).

The parts: `cpo.reporting.data` reads, `cpo.reporting.verdict` judges, `cpo.reporting.plots`
draws, `cpo.reporting.sections` lists the page's sections (`register_section` adds one) and
this module renders and writes the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from cpo.engine.config import ProjectConfig
from cpo.engine.templates import sandboxed_environment, template_loader
from cpo.errors import CPOError
from cpo.reporting.data import ReportData, read_report_data
from cpo.reporting.plots import (
    ARM_PALETTE,
    CONTROL_COLOR,
    DECISION_COLORS,
    PLOT_IDS,
    finite,
    forest_plot,
    funnel_plot,
    heatmap_plot,
    power_plot,
    safety_plot,
    srm_plot,
)
from cpo.reporting.sections import REPORT_SECTIONS, ReportSection, register_section
from cpo.reporting.tables import FUNNEL_EVENTS, FUNNEL_LABELS
from cpo.reporting.verdict import Verdict, verdict

EVENTS = FUNNEL_EVENTS  # the name this module exported before the split

TEMPLATES = Path(__file__).parent / "templates"
"""``report.html.j2`` (the page), ``report.css.j2`` and ``sections/*.html.j2``."""

__all__ = [
    "ARM_PALETTE",
    "CONTROL_COLOR",
    "DECISION_COLORS",
    "EVENTS",
    "FUNNEL_LABELS",
    "PLOT_IDS",
    "REPORT_SECTIONS",
    "TEMPLATES",
    "ReportData",
    "ReportSection",
    "Verdict",
    "forest_plot",
    "funnel_plot",
    "heatmap_plot",
    "power_plot",
    "read_report_data",
    "register_section",
    "render_report",
    "safety_plot",
    "srm_plot",
    "verdict",
    "write_report",
]


def write_report(config: ProjectConfig, out: Path | None = None) -> Path:
    """Write the HTML report (default ``target/report.html``) and return its path.

    Works before any build and with no events: the report then says what is missing.

    Raises:
        CPOError: the output file cannot be written.
    """
    path = Path(out) if out else config.path("target") / "report.html"
    html = render_report(read_report_data(config))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise CPOError(
            f"cannot write the report to {path}: {e.strerror or e}; choose another --out"
        ) from e
    return path


def render_report(data: ReportData) -> str:
    """The report as one HTML document (plots embedded, all text escaped)."""
    envs: dict[Path | None, jinja2.Environment] = {}

    def environment(directory: Path | None) -> jinja2.Environment:
        if directory not in envs:
            folders = (directory, TEMPLATES) if directory else (TEMPLATES,)
            envs[directory] = sandboxed_environment(
                template_loader(*folders), autoescape=True, filters=FILTERS
            )
        return envs[directory]

    sections = []
    if data.has_database:
        sections = [
            html
            for section in list(REPORT_SECTIONS)
            if (html := _section(section, data, environment))
        ]
    return (
        environment(None)
        .get_template("report.html.j2")
        .render(d=data, sections=sections, cpo_version=_version())
    )


def _section(section: ReportSection, data: ReportData, environment: Any) -> Markup | None:
    """One section rendered (already escaped), or None when its data function leaves it out."""
    context = section.data(data)
    if context is None:
        return None
    html = (
        environment(section.directory)
        .get_template(section.template)
        .render(d=data, decision_colors=DECISION_COLORS, **context)
    )
    return Markup(html)  # noqa: S704 - rendered with autoescape: every value is escaped


def _version() -> str:
    from cpo import __version__

    return __version__


def _num(value: Any, digits: int = 0) -> str:
    if not finite(value):
        return "—"
    return f"{float(value):,.{digits}f}"


def _pct(value: Any, digits: int = 1, signed: bool = False) -> str:
    if not finite(value):
        return "—"
    return f"{float(value) * 100:{'+' if signed else ''}.{digits}f}%"


def _pval(value: Any) -> str:
    if not finite(value):
        return "—"
    return "< 0.0001" if float(value) < 1e-4 else f"{float(value):.4f}"


FILTERS = {"num": _num, "pct": _pct, "pval": _pval, "label": lambda s: str(s).replace("_", " ")}
"""The filters every report template may use."""

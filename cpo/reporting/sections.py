"""The report's sections: a list another package can add to.

    register_section(ReportSection("holdout", "holdout.html.j2", holdout_data,
                                   directory=Path(__file__).parent / "templates"),
                     before="calls")

Once the database exists, the page shows each section of `REPORT_SECTIONS` in order: its
``data`` function turns the `cpo.reporting.data.ReportData` into the names its template uses
(None leaves the section out), and its template (a Jinja file, looked up in the section's
``directory`` and then in ``cpo/reporting/templates/``) renders in the one sandboxed, autoescaping
environment (`cpo.engine.templates.sandboxed_environment`). Every section template also gets
``d`` (the report data), ``decision_colors`` and the filters ``num``, ``pct``, ``pval`` and
``label``. The root element's ``id`` is the section's anchor in the page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpo.reporting.data import ReportData, records
from cpo.reporting.plots import (
    forest_plot,
    funnel_plot,
    heatmap_plot,
    overall_results,
    power_plot,
    safety_plot,
    srm_p,
    srm_plot,
)
from cpo.reporting.verdict import call_summary, power_rows, verdict

SectionData = Callable[[ReportData], Mapping[str, Any] | None]


def _no_data(_: ReportData) -> Mapping[str, Any]:
    return {}


@dataclass(frozen=True)
class ReportSection:
    """One section of the report page.

    Attributes:
        name: A unique name (register before/after it); by convention the root element's id.
        template: The template file, e.g. ``sections/funnel.html.j2``.
        data: Report data -> the template's names; None leaves the section out of the page.
        directory: Where `template` lives when it is not one of ``cpo/reporting/templates/``.
    """

    name: str
    template: str
    data: SectionData = _no_data
    directory: Path | None = None


def _results(d: ReportData) -> Mapping[str, Any]:
    return {"overall": records(overall_results(d)), "plot": forest_plot(d)}


def _variant_groups(d: ReportData) -> list[tuple[str, list[dict[str, Any]]]]:
    """Approved variants grouped per segment (the control first), tones side by side."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for v in records(d.variants):
        segment = v["segment_id"]
        title = d.segments.get(segment, segment) if segment else "Control (every segment)"
        groups.setdefault(str(title), []).append(v)
    return list(groups.items())


REPORT_SECTIONS: list[ReportSection] = [
    ReportSection("decision", "sections/decision.html.j2", lambda d: {"verdict": verdict(d)}),
    ReportSection("results", "sections/results.html.j2", _results),
    ReportSection("segments", "sections/segments.html.j2", lambda d: {"plot": heatmap_plot(d)}),
    ReportSection(
        "segment-policy",
        "sections/segment_policy.html.j2",
        lambda d: {"policy": records(d.policy)},
    ),
    ReportSection("funnel", "sections/funnel.html.j2", lambda d: {"plot": funnel_plot(d)}),
    # The sample ratio check (#srm) and data freshness (#freshness), side by side.
    ReportSection(
        "checks", "sections/checks.html.j2", lambda d: {"plot": srm_plot(d), "srm_p": srm_p(d)}
    ),
    ReportSection(
        "power",
        "sections/power.html.j2",
        lambda d: {"plot": power_plot(d), "power_rows": power_rows(d)},
    ),
    ReportSection(
        "safety",
        "sections/safety.html.j2",
        lambda d: {"plot": safety_plot(d), "blocked": records(d.blocked)},
    ),
    ReportSection(
        "variants", "sections/variants.html.j2", lambda d: {"variant_groups": _variant_groups(d)}
    ),
    ReportSection(
        "calls",
        "sections/calls.html.j2",
        lambda d: {"calls": call_summary(d.calls, d.run.get("invocation_id"))},
    ),
]
"""The page's sections in order; `register_section` adds one."""


def register_section(
    section: ReportSection, *, before: str | None = None, after: str | None = None
) -> ReportSection:
    """Add `section` to the report (at the end, or before/after the section of that name).

    Registering a section again (same name, template and directory, e.g. from a plugin hook
    called once per project load) replaces it where it is.

    Raises:
        ValueError: another section has that name, `before`/`after` names no section, or both
            are given.
    """
    if before is not None and after is not None:
        raise ValueError("register_section: give before or after, not both")
    existing = {s.name: s for s in REPORT_SECTIONS}
    if section.name in existing:
        known = existing[section.name]
        if (known.template, known.directory) != (section.template, section.directory):
            raise ValueError(f"a report section named {section.name!r} is already registered")
        REPORT_SECTIONS[REPORT_SECTIONS.index(known)] = section
        return section
    anchor = before if before is not None else after
    if anchor is None:
        REPORT_SECTIONS.append(section)
        return section
    if anchor not in existing:
        raise ValueError(f"no report section named {anchor!r}; registered: {', '.join(existing)}")
    index = [s.name for s in REPORT_SECTIONS].index(anchor)
    REPORT_SECTIONS.insert(index if before is not None else index + 1, section)
    return section


def unregister_section(name: str) -> None:
    """Remove the section of that name (nothing happens when there is none)."""
    REPORT_SECTIONS[:] = [s for s in REPORT_SECTIONS if s.name != name]

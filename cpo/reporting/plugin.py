"""Reporting as a plugin of the engine (`cpo.engine.plugins`): the build summary, the HTML
report behind ``Project.report`` and MLflow tracking behind ``Project.track``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cpo.engine.plugins import hookimpl


@hookimpl
def cpo_build_summary(
    db: Any, ledger: Sequence[Sequence[Any]], run_id: str, errors: Sequence[Sequence[str]]
) -> dict[str, Any] | None:
    """Variants approved and blocked, customers on the fallback, calls, tokens and cost."""
    from cpo.reporting.summary import collect

    return collect(db, ledger, run_id, errors)


@hookimpl
def cpo_summary_lines(summary: Mapping[str, Any] | None) -> list[str]:
    """The summary as the lines the CLI prints after a build."""
    from cpo.reporting.summary import lines

    return lines(dict(summary) if summary is not None else None)


@hookimpl
def cpo_write_report(config: Any, path: Path | None) -> Path:
    """The self-contained HTML experiment report."""
    from cpo.reporting.report import write_report

    return write_report(config, path)


@hookimpl
def cpo_track_run(config: Any, run: Any, report_path: Path | None, tracking_uri: str | None) -> str:
    """Log the run to MLflow (`cpo.reporting.tracking`)."""
    from cpo.reporting.tracking import track_run

    return track_run(config, run, report_path=report_path, tracking_uri=tracking_uri)

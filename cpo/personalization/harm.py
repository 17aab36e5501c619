"""Harm thresholds and approval: when a severity blocks, and when a variant is approved.

The two rules, each stated once:

* **Blocking** (`is_blocked`): a harm severity blocks when it is greater than or equal to its
  category's threshold (``vars.safety.thresholds``, default `DEFAULT_THRESHOLD`, Azure's
  "medium"). `harm_checks` turns a safety result into ``harm:<Category>`` rows with it.
* **Approval** (`approved`): a variant is approved only when it was screened on at least
  ``vars.safety.required_harm_checks`` harm rows (default: every category, `REQUIRED_HARM_CHECKS`)
  and every one of its checks passed. ``models/pipeline/approved_variants.sql`` applies the same
  rule in SQL through the macro ``{{ approved_variant_ids(ref('safety_screenings')) }}``, which
  renders `APPROVAL_SQL`; both read the constants below, and a test runs both on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cpo.engine.compile import sql_literal
from cpo.engine.macros import register_macro
from cpo.personalization.checks import Check, findings
from cpo.providers.base import HARM_CATEGORIES, SafetyResult

DEFAULT_THRESHOLD = 4
"""A severity at or above this blocks, unless ``vars.safety.thresholds`` says otherwise."""
REQUIRED_HARM_CHECKS = len(HARM_CATEGORIES)
"""Harm rows a variant needs to count as screened (``vars.safety.required_harm_checks``)."""
THRESHOLDS_KEY = "vars.safety.thresholds"
HARM_PREFIX = "harm:"
UNSCREENED = "harm:unscreened"
"""The failed row of a variant the safety provider could not screen: it is no screening."""

APPROVAL_SQL = """select variant_id
    from {screenings}
    group by variant_id
    having bool_and(passed)
        and count(*) filter (where "check" like {harm_like} and "check" <> {unscreened})
            >= {required}"""
"""The approval rule over ``safety_screenings`` rows, as SQL (`approved` is the same in Python)."""


def is_blocked(severity: int, threshold: int) -> bool:
    """The one harm rule: a severity blocks when it is at or above its threshold."""
    return severity >= threshold


def is_harm_screening(check: str) -> bool:
    """Whether a check row is a harm screening (``harm:Hate``, ``harm:<layer>:Hate``)."""
    return check.startswith(HARM_PREFIX) and check != UNSCREENED


def approved(checks: Iterable[Check], required_harm_checks: int = REQUIRED_HARM_CHECKS) -> bool:
    """A variant is approved only when it was screened and every check passed."""
    checks = list(checks)
    screened = sum(1 for c in checks if is_harm_screening(c.check))
    return bool(checks) and all(c.passed for c in checks) and screened >= required_harm_checks


def approval_sql(screenings: str, required_harm_checks: Any = None) -> str:
    """`APPROVAL_SQL` over the relation `screenings`: the approved variants' ids.

    `required_harm_checks` is ``vars.safety.required_harm_checks`` (None or ``'None'``: every
    category).
    """
    required = (
        REQUIRED_HARM_CHECKS
        if required_harm_checks in (None, "None", "")
        else int(required_harm_checks)
    )
    return APPROVAL_SQL.format(
        screenings=screenings,
        harm_like=sql_literal(HARM_PREFIX + "%"),
        unscreened=sql_literal(UNSCREENED),
        required=required,
    )


def _approved_variant_ids(
    screenings: str, required_harm_checks: Any = None, *, dialect: str = "duckdb"
) -> str:
    return approval_sql(screenings, required_harm_checks)


register_macro("approved_variant_ids", _approved_variant_ids)


def harm_checks(result: SafetyResult, thresholds: Mapping[str, int]) -> list[Check]:
    """One ``harm:<Category>`` check per category, plus the ``blocklist`` check.

    `thresholds` are ``vars.safety.thresholds`` as checked by their model (`SafetyVars`); a
    category without one takes `DEFAULT_THRESHOLD`. A category missing from the result fails
    (fail-closed: unscreened is not safe).
    """
    resolved = {c: thresholds.get(c, DEFAULT_THRESHOLD) for c in HARM_CATEGORIES}
    checks = []
    for category in HARM_CATEGORIES:
        name = f"{HARM_PREFIX}{category}"
        threshold = resolved[category]
        severity = result.severities.get(category)
        if severity is None:
            checks.append(Check(name, 0, False, "not_screened: no severity returned"))
        elif is_blocked(severity, threshold):
            checks.append(
                Check(name, severity, False, f"severity {severity} >= threshold {threshold}")
            )
        else:
            checks.append(
                Check(name, severity, True, f"severity {severity} < threshold {threshold}")
            )
    checks.append(findings("blocklist", [f"blocklisted: {m}" for m in result.blocklist_matches]))
    return checks


def unscreened(reason: str = "not_screened: no safety result") -> Check:
    """The failed row of a variant the safety provider could not screen (fail-closed)."""
    return Check(UNSCREENED, 0, False, reason)

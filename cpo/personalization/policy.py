"""The screen of generated copy: every check on one variant (`screen`).

Each concern has its own module, and each rule is stated once:

* `cpo.personalization.harm`: harm thresholds (`is_blocked`), harm rows, and the approval rule
  (`approved`, also rendered as SQL for ``models/pipeline/approved_variants.sql``);
* `cpo.personalization.copy_rules`: brand policy for e-mail copy (``rules/copy_rules.yml`` and
  ``vars.safety.policy``): forbidden phrases, required elements, lengths, PII, claims, false
  urgency, markup;
* `cpo.personalization.facts`: numbers, prices and dates grounded in cited documents
  (``rules/dates.yml``), and sentence support (`cpo.personalization.grounding`);
* `cpo.personalization.injection`: instructions aimed at a model (``lexicons/injection.yml``).

Every function returns `Check` values, one per check name: the rows of
``safety_screenings(variant_id, check, severity, passed, reason)``. The names below are
re-exported so callers can keep one import (``from cpo.personalization import policy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cpo.personalization.checks import CITATION_BRACKET, MERGE_TAG, Check, ok, strip_markup
from cpo.personalization.copy_rules import (
    COUNTDOWN,
    DEFAULT_POLICY,
    FINANCIAL_CLAIMS,
    FORMULA,
    HEALTH_CLAIMS,
    MARKUP,
    POLICY_KEY,
    SCARCITY,
    SCARCITY_EVIDENCE,
    find_financial_claims,
    find_formulas,
    find_health_claims,
    find_markup,
    find_pii,
    find_urgency,
    phrase_pattern,
    pii_allowed,
    policy_checks,
    resolve_policy,
    supports_scarcity,
)
from cpo.personalization.facts import (
    CLAIM,
    DATE,
    extract_claims,
    grounding_checks,
    has_deadline,
    lexical_checks,
)
from cpo.personalization.harm import (
    DEFAULT_THRESHOLD,
    THRESHOLDS_KEY,
    approved,
    harm_checks,
    is_blocked,
    unscreened,
)
from cpo.personalization.injection import INJECTION_PATTERNS, find_injection, injection_check
from cpo.personalization.settings import PolicyVars
from cpo.providers.base import SafetyResult

__all__ = [
    "CITATION_BRACKET",
    "CLAIM",
    "COUNTDOWN",
    "DATE",
    "DEFAULT_POLICY",
    "DEFAULT_THRESHOLD",
    "FINANCIAL_CLAIMS",
    "FORMULA",
    "HEALTH_CLAIMS",
    "INJECTION_PATTERNS",
    "MARKUP",
    "MERGE_TAG",
    "POLICY_KEY",
    "SCARCITY",
    "SCARCITY_EVIDENCE",
    "THRESHOLDS_KEY",
    "Check",
    "approved",
    "extract_claims",
    "find_financial_claims",
    "find_formulas",
    "find_health_claims",
    "find_injection",
    "find_markup",
    "find_pii",
    "find_urgency",
    "grounding_checks",
    "harm_checks",
    "has_deadline",
    "injection_check",
    "is_blocked",
    "lexical_checks",
    "phrase_pattern",
    "pii_allowed",
    "policy_checks",
    "resolve_policy",
    "screen",
    "strip_markup",
    "supports_scarcity",
]


def screen(
    subject: str,
    body: str,
    *,
    citations: Sequence[str],
    retrieved_ids: Sequence[str],
    cited_texts: Mapping[str, str],
    safety_result: SafetyResult | None,
    thresholds: Mapping[str, int],
    policy: Mapping[str, Any] | PolicyVars,
    footer: str = "",
    written_by_person: bool = False,
) -> list[Check]:
    """Run every check on one variant.

    `footer` is appended to every message (required elements are looked for in it too); copy
    `written_by_person` (the control) is not held to sentence-by-sentence citation.

    `safety_result` is None when the safety provider could not screen the text: the variant then
    gets a failed ``harm:unscreened`` check (fail-closed) instead of the harm checks.
    """
    checks = [unscreened()] if safety_result is None else harm_checks(safety_result, thresholds)
    retrieved = set(retrieved_ids)
    urgency_sources = [cited_texts.get(c, "") for c in citations if c in retrieved]
    checks += policy_checks(subject, body, policy, urgency_sources, footer)
    words = resolve_policy(policy)["grounding"]
    checks += grounding_checks(subject, body, citations, retrieved_ids, cited_texts, words)
    if written_by_person:
        checks = [
            ok(c.check, "written by a person (prompts/control/)")
            if c.check == "grounding:sentences"
            else c
            for c in checks
        ]
    checks.append(injection_check(f"{subject}\n{body}"))
    return checks

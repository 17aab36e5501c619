"""The schema of the personalisation domain's ``vars:`` sections (`VARS_SECTIONS`), declared to
`cpo.engine.settings` by `cpo.personalization.plugin`.

One model per section: ``as_of_date``, ``retrieval``, ``generation`` and ``safety`` here;
``segmentation``, ``messages`` and ``content`` in `cpo.personalization.segmentation`;
``experiment`` in `cpo.experiments.settings`. Unknown keys and wrong values are errors naming the
key path, its line and what is expected (`cpo.engine.config_schema.validate_settings`). Deeper
rules that need more than one value (arms against tones, a metric's events) stay with the steps
that use them (``udfs/_experiment_design.py``).

Each section is validated by one model only, shared with the steps that read it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from cpo.engine.settings import (
    Identifier,
    NonEmptyStr,
    NonNegativeInt,
    Number,
    PositiveInt,
    Section,
    unknown_key_error,
    validate_model,
)
from cpo.personalization import harm
from cpo.providers.base import HARM_CATEGORIES

Fraction = Annotated[float, Field(gt=0, lt=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
Severity = Annotated[int, Field(ge=0, le=7)]
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$")


def _date(value: Any) -> str:
    """``as_of_date``: '' (today) or an ISO date; YAML may give a date object."""
    if isinstance(value, dt.datetime):
        raise ValueError(f"expected a date like 2026-11-24 (no time), got {value.isoformat()!r}")
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"expected a date like 2026-11-24 (or '' for today), got {value!r}")
    if value == "":
        return value
    try:
        return dt.date.fromisoformat(value).isoformat() and value
    except ValueError:
        raise ValueError(
            f"expected a date like 2026-11-24 (or '' for today), got {value!r}"
        ) from None


def _unique(values: list[str]) -> list[str]:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


def _harm_categories(value: Any) -> Any:
    if isinstance(value, dict):
        for key in value:
            if key not in HARM_CATEGORIES:
                raise unknown_key_error(key, list(HARM_CATEGORIES))
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value, re.IGNORECASE)
    except re.error as e:
        raise ValueError(f"is not a valid regular expression ({e})") from None
    return value


AsOfDate = Annotated[Any, AfterValidator(_date)]
Regex = Annotated[str, AfterValidator(_regex)]


# --- retrieval, generation, safety -------------------------------------------------------------


class RetrievalVars(Section):
    top_k: Annotated[int, Field(ge=1, le=100)] = 4
    min_score: Number = 0.0
    exclude_flagged: bool = True
    keywords: str = ""


class GenerationVars(Section):
    tones: Annotated[list[Identifier], Field(min_length=1), AfterValidator(_unique)] = Field(
        default_factory=lambda: ["urgent", "informational", "friendly"]
    )
    min_words: NonNegativeInt = 40
    max_words: PositiveInt = 120
    subject_max_chars: PositiveInt = 60
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.4
    max_tokens: PositiveInt = 500
    brand: NonEmptyStr = "our brand"


class GroundingVars(Section):
    """``vars.safety.policy.grounding``: lexical support thresholds
    (cpo/personalization/grounding.py)."""

    enabled: bool = True
    min_support: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_uncited_words: NonNegativeInt = 2


class PolicyVars(Section):
    """``vars.safety.policy`` (merged over `cpo.personalization.policy.DEFAULT_POLICY`)."""

    forbidden_phrases: list[str] | None = None
    required_patterns: dict[str, Regex] | list[Regex] | None = None
    subject_max_chars: NonNegativeInt | None = None
    body_min_words: NonNegativeInt | None = None
    body_max_words: NonNegativeInt | None = None
    merge_tag_chars: NonNegativeInt | None = None
    pii_allow: list[str] | None = None
    urgency_terms: list[str] | None = None
    grounding: GroundingVars | None = None


class SafetyVars(Section):
    """``vars.safety``: a category with no threshold takes `harm.DEFAULT_THRESHOLD`."""

    thresholds: Annotated[dict[str, Severity], BeforeValidator(_harm_categories)] = Field(
        default_factory=dict
    )
    output_type: Literal["FourSeverityLevels", "EightSeverityLevels"] = "EightSeverityLevels"
    on_unscreened: Literal["fail", "warn"] = "fail"
    required_harm_checks: Annotated[int, Field(ge=0, le=len(HARM_CATEGORIES))] = (
        harm.REQUIRED_HARM_CHECKS
    )
    blocklists: dict[str, list[NonEmptyStr]] = Field(default_factory=dict)
    policy: PolicyVars = PolicyVars()

    def resolved_thresholds(self) -> dict[str, int]:
        """A threshold for every harm category (`harm.DEFAULT_THRESHOLD` where none is set)."""
        return {c: self.thresholds.get(c, harm.DEFAULT_THRESHOLD) for c in HARM_CATEGORIES}


SAFETY_KEY = "vars.safety"
POLICY_KEY = "vars.safety.policy"
GROUNDING_KEY = "vars.safety.policy.grounding"


def safety_settings(values: Mapping[str, Any] | None) -> SafetyVars:
    """``vars.safety`` as its model (the mapping a step reads was checked when cpo.yml loaded).

    Raises:
        ConfigurationError: a value given in Python is wrong, naming its key under vars.safety.
    """
    return validate_model(SafetyVars, values or {}, key=SAFETY_KEY)


def policy_settings(values: Mapping[str, Any] | None) -> PolicyVars:
    """``vars.safety.policy`` as its model (`safety_settings`, for the policy alone)."""
    return validate_model(PolicyVars, values or {}, key=POLICY_KEY)


def grounding_settings(values: Mapping[str, Any] | None) -> GroundingVars:
    """``vars.safety.policy.grounding`` as its model (`safety_settings`, for grounding alone)."""
    return validate_model(GroundingVars, values or {}, key=GROUNDING_KEY)


# The sections of this package, declared by `cpo.personalization.plugin` (segmentation,
# messages and content are `cpo.personalization.segmentation`'s; experiment is registered by
# `cpo.experiments.plugin`).
VARS_SECTIONS: dict[str, Any] = {
    "as_of_date": AsOfDate,
    "retrieval": RetrievalVars,
    "generation": GenerationVars,
    "safety": SafetyVars,
}

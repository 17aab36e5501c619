"""The schema of the sample domain's ``vars:`` sections, registered with `cpo.settings`.

One model per section: ``as_of_date``, ``segmentation``, ``retrieval``, ``generation``,
``safety``, ``messages`` and ``experiment``. Unknown keys and wrong values are errors naming the
key path, its line and what is expected (`cpo.settings.validate_settings`). Deeper rules that
need more than one value (arms against tones, a metric's events) stay with the steps that use
them (``udfs/_experiment_design.py``).

``segmentation``, ``messages`` and ``experiment`` accept both today's shapes and the richer ones
being introduced (rules as a list with ``when:``, merge tags as ``{sql, fallback}``, experiment
``assignments``/``outcomes``); replace a model with `register_vars_section` to tighten it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from cpo import experiment_settings
from cpo.providers.base import HARM_CATEGORIES
from cpo.segmentation import ContentSettings, MessagesSettings, SegmentationSettings
from cpo.settings import (
    Identifier,
    NonEmptyStr,
    NonNegativeInt,
    NonNegativeNumber,
    Number,
    PositiveInt,
    Section,
    SqlExpression,
    register_vars_section,
    unknown_key_error,
)

Fraction = Annotated[float, Field(gt=0, lt=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
Score = Annotated[Any, AfterValidator(lambda v: _score(v))]
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


def _timestamp(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        raise ValueError(f"expected a timestamp like '2026-11-24 09:00:00', got {value!r}")
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected a valid timestamp, got {value!r}") from None
    return value


def _score(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise ValueError(f"expected an RFM score, an integer from 1 to 5; got {value!r}")
    return value


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


AsOfDate = Annotated[Any, AfterValidator(_date)]
Timestamp = Annotated[Any, AfterValidator(_timestamp)]


# --- segmentation ------------------------------------------------------------------------------


class Champions(Section):
    min_r: Score
    min_f: Score
    min_m: Score


class Loyal(Section):
    min_r: Score
    min_f: Score


class AtRisk(Section):
    max_r: Score
    min_f: Score
    min_m: Score


class Hibernating(Section):
    max_r: Score


class RfmRules(Section):
    """Today's RFM thresholds on the 1-5 scores (``models/segments/segments_rules.sql``)."""

    new_customer_max_tenure_days: NonNegativeInt
    champions: Champions
    loyal: Loyal
    at_risk: AtRisk
    hibernating: Hibernating


class Rule(Section):
    """A segment rule written by the analyst: ``when:`` is one SQL boolean expression."""

    name: Identifier
    description: str = ""
    when: SqlExpression


class DefaultSegment(Section):
    name: Identifier
    description: str = ""


class SegmentationVars(Section):
    method: Literal["rules", "kmeans"] = "rules"
    k_min: Annotated[int, Field(ge=2)] = 3
    k_max: Annotated[int, Field(ge=2)] = 8
    seed: int = 42
    sample_size: PositiveInt = 20000
    rules: RfmRules | list[Rule] | None = None
    default: Identifier | DefaultSegment | None = None


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
    """``vars.safety.policy.grounding``: lexical support thresholds (cpo/grounding.py)."""

    enabled: bool = True
    min_support: Annotated[float, Field(ge=0, le=1)] = 0.5
    max_uncited_words: NonNegativeInt = 2


class PolicyVars(Section):
    """``vars.safety.policy`` (merged over `cpo.policy.DEFAULT_POLICY`)."""

    forbidden_phrases: list[str] | None = None
    required_patterns: dict[str, str] | list[str] | None = None
    subject_max_chars: NonNegativeInt | None = None
    body_min_words: NonNegativeInt | None = None
    body_max_words: NonNegativeInt | None = None
    merge_tag_chars: NonNegativeInt | None = None
    pii_allow: list[str] | None = None
    urgency_terms: list[str] | None = None
    grounding: GroundingVars | None = None


class SafetyVars(Section):
    thresholds: Annotated[dict[str, Severity], BeforeValidator(_harm_categories)] = Field(
        default_factory=dict
    )
    output_type: Literal["FourSeverityLevels", "EightSeverityLevels"] = "EightSeverityLevels"
    on_unscreened: Literal["fail", "warn"] = "fail"
    required_harm_checks: Annotated[int, Field(ge=0, le=len(HARM_CATEGORIES))] = len(
        HARM_CATEGORIES
    )
    blocklists: dict[str, list[NonEmptyStr]] = Field(default_factory=dict)
    policy: PolicyVars = PolicyVars()


# --- messages ----------------------------------------------------------------------------------


class MergeTag(Section):
    """A merge tag as ``{sql, fallback}``: the SQL expression and the text when it is NULL."""

    sql: SqlExpression
    fallback: str | None = None


class MessagesVars(Section):
    merge_tags: dict[Identifier, SqlExpression | MergeTag] = Field(default_factory=dict)
    strip_citations: bool = True


# --- experiment --------------------------------------------------------------------------------


class ArmVars(Section):
    name: Identifier
    weight: NonNegativeNumber
    message: str | None = None  # ``none``: a holdout arm that gets no message


class MetricVars(Section):
    name: NonEmptyStr
    type: Literal["proportion", "mean", "ratio"]
    role: Literal["primary", "secondary", "guardrail"] = "secondary"
    direction: Literal["increase", "decrease"] = "increase"
    event: NonEmptyStr | None = None
    value: NonEmptyStr | None = None
    column: NonEmptyStr | None = None
    numerator: NonEmptyStr | None = None
    denominator: NonEmptyStr | None = None
    covariate: NonEmptyStr | None = None
    mde: Fraction | None = None
    baseline: Fraction | None = None


class EventsVars(Section):
    path: NonEmptyStr | list[NonEmptyStr] = "seeds/events*.csv"


class SimulationVars(Section):
    enabled: bool | Literal["auto"] = "auto"
    seed: int = 0
    covariate: NonEmptyStr | None = None
    covariate_strength: Probability = 0.0
    rates: dict[str, dict[str, NonNegativeNumber]] = Field(default_factory=dict)
    segment_multipliers: dict[str, dict[str, NonNegativeNumber]] = Field(default_factory=dict)


class ExperimentVars(Section):
    id: NonEmptyStr = "experiment"
    salt: NonEmptyStr | None = None
    start_at: Timestamp | None = None
    fallback: Identifier = "control"
    control: Identifier = "control"
    arms: list[ArmVars] | None = None
    metrics: list[MetricVars] | None = None
    alpha: Fraction = 0.05
    correction: Literal["holm", "bh"] = "holm"
    effect: Literal["relative", "absolute"] = "relative"
    min_power: Fraction = 0.8
    mde: Fraction | None = None
    attribution_days: Annotated[float, Field(gt=0)] = 7
    events: EventsVars = EventsVars()
    simulation: SimulationVars = SimulationVars()
    # Being introduced: where assignments and outcomes come from (validated by their owner).
    assignments: dict[str, Any] | None = None
    outcomes: dict[str, Any] | list[Any] | None = None


register_vars_section("as_of_date", AsOfDate)
# Segmentation rules, merge tags and content rules: one model each, owned by cpo.segmentation.
register_vars_section("segmentation", SegmentationSettings)
register_vars_section("retrieval", RetrievalVars)
register_vars_section("generation", GenerationVars)
register_vars_section("safety", SafetyVars)
register_vars_section("messages", MessagesSettings)
register_vars_section("content", ContentSettings)
# vars.experiment: one model, shared with the experiment steps (cpo/experiment_settings.py).
register_vars_section("experiment", experiment_settings.ExperimentVars)

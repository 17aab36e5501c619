"""The settings of ``vars.experiment`` as one pydantic model (unknown keys are errors).

Registered as a ``vars`` section (`cpo.experiments.plugin`), so a misspelt or invalid experiment
setting is refused when ``cpo.yml`` is read, naming its key path and line; the experiment steps
(``udfs/_experiment_design.py``) and the report read the instance the loader made
(``config.section("vars.experiment", ExperimentVars)``) and check nothing again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, model_validator

from cpo.engine.macros import register_macro
from cpo.engine.settings import Section
from cpo.errors import ConfigurationError

Event = Literal["delivered", "open", "click", "conversion", "unsubscribe"]
"""The event types, in funnel order: the one list. ``EVENTS`` is read from it, the SQL models
read it through the ``experiment_events()`` macro, and settings are validated against it."""
EVENTS: tuple[str, ...] = get_args(Event)
METRIC_TYPES = ("proportion", "mean", "ratio")
ROLES = ("primary", "secondary", "guardrail")
DIRECTIONS = ("increase", "decrease")
VALUES = ("count", "revenue")

ErrorFactory = Callable[[str, str], ConfigurationError]
Fraction = Annotated[float, Field(gt=0, lt=1, strict=False)]
Name = Annotated[str, Field(min_length=1)]


def _experiment_events(*, dialect: str = "duckdb") -> list[str]:
    """``{{ experiment_events() }}`` in a model: the event types (`EVENTS`), as a list."""
    return list(EVENTS)


register_macro("experiment_events", _experiment_events)


def _timestamp(value: str | None) -> str | None:
    """``start_at``: a timestamp like 2026-11-24 09:00:00 (it becomes a SQL literal)."""
    if value is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"expected a timestamp like '2026-11-24 09:00:00', got {value!r}"
            ) from None
    return value


class ArmVars(Section):
    """One arm: ``name``, relative ``weight``, and ``message: none`` for a holdout."""

    name: Name
    weight: Annotated[float, Field(ge=0)]
    message: Literal["none"] | None = None


class FileColumns(Section):
    """Roles mapped to file columns (``customer_id`` required)."""

    customer_id: Name = "customer_id"
    arm: Name | None = None
    assigned_at: Name | None = None
    segment_id: Name | None = None


class AssignmentsVars(Section):
    """An assignment made outside CPO: a CSV or Parquet file, one row per customer."""

    path: Name
    columns: FileColumns = FileColumns(arm="arm")

    @model_validator(mode="after")
    def _arm_column(self) -> AssignmentsVars:
        if self.columns.arm is None:
            raise ValueError("columns.arm is required: the file column holding the arm name")
        return self


class OutcomesVars(Section):
    """Per-customer outcomes: one row per customer, one numeric column per outcome."""

    path: Name | list[Name]
    columns: FileColumns = FileColumns()


class EventsVars(Section):
    """Where observed events come from."""

    path: Name | list[Name] = "seeds/events*.csv"


class MetricVars(Section):
    """A metric declared under ``experiment.metrics``.

    Attributes:
        name: Metric name (the ``metric`` column of the results).
        type: ``proportion`` (share of customers with ≥ 1 `event`, or with `column` > 0),
            ``mean`` (per-customer sum of `value` over `event`s, or the `column`; customers
            without events or outcome rows count as 0) or ``ratio`` (sum of `numerator` events /
            sum of `denominator` events, delta method).
        role: ``primary`` (decides), ``secondary`` (informs, never decides) or ``guardrail``
            (one-sided test for harm; a harmed guardrail blocks shipping).
        direction: ``increase`` or ``decrease``: which way is better.
        event: The event of a proportion or mean metric (event stream).
        column: The outcome-table column of a proportion or mean metric.
        value: ``count`` (events) or ``revenue`` (their revenue), for a mean metric on events.
        numerator, denominator: Events counted by a ratio metric.
        covariate: Numeric pre-period column for CUPED: from the outcome table when
            ``outcomes`` is set, else from ``stg_customers`` (not for ratios).
        mde: Minimum detectable effect, relative to the control mean (power of null results).
        baseline: Expected control rate of a proportion metric (planning only).
    """

    name: Name
    type: Literal["proportion", "mean", "ratio"]
    role: Literal["primary", "secondary", "guardrail"] = "secondary"
    direction: Literal["increase", "decrease"] = "increase"
    event: Event | None = None
    column: Name | None = None
    value: Literal["count", "revenue"] = "count"
    numerator: Event | None = None
    denominator: Event | None = None
    covariate: Name | None = None
    mde: Fraction | None = None
    baseline: Fraction | None = None

    @model_validator(mode="after")
    def _source(self) -> MetricVars:
        if self.type == "ratio":
            if self.numerator is None or self.denominator is None:
                raise ValueError("a ratio metric needs numerator and denominator events")
            if self.covariate:
                raise ValueError("CUPED is supported for proportion and mean metrics only")
        elif (self.event is None) == (self.column is None):
            raise ValueError(
                "a proportion or mean metric needs exactly one source: event: "
                f"({', '.join(EVENTS)}) or column: (an outcome-table column)"
            )
        return self


class ExperimentVars(Section):
    """The ``vars.experiment`` block (pydantic v2, unknown keys are errors)."""

    id: Name = "experiment"
    salt: str | None = None
    start_at: Annotated[str | None, AfterValidator(_timestamp)] = None
    fallback: Name = "control"
    control: Name = "control"
    arms: list[ArmVars] | None = None
    assignments: AssignmentsVars | None = None
    outcomes: OutcomesVars | None = None
    events: EventsVars = EventsVars()
    metrics: list[MetricVars] | None = None
    alpha: Fraction = 0.05
    correction: Literal["holm", "bh"] = "holm"
    min_power: Fraction = 0.8
    mde: Fraction = 0.1
    effect: Literal["relative", "absolute"] = "relative"
    attribution_days: Annotated[float, Field(gt=0)] = 7
    max_rejected_share: Annotated[float, Field(ge=0, le=1)] = 0.2
    simulation: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentVars:
        if self.metrics is not None and not self.metrics:
            raise ValueError(
                "metrics: declare at least one metric, e.g. [{name: open_rate, "
                "type: proportion, role: primary, event: open}]"
            )
        names = [m.name for m in self.metrics or []]
        if len(set(names)) != len(names):
            raise ValueError(f"metrics: metric names must be unique, got {names}")
        arms = [a.name for a in self.arms or []]
        if len(set(arms)) != len(arms):
            raise ValueError(f"arms: each arm name must appear once, got {arms}")
        if self.arms is not None and not sum(a.weight for a in self.arms) > 0:
            raise ValueError("arms: the weights add up to 0; give at least one arm a weight > 0")
        if self.outcomes is None:
            for i, m in enumerate(self.metrics or []):
                if m.column is not None:
                    raise ValueError(
                        f"metrics[{i}].column: {m.column!r} needs an outcome table: set "
                        "vars.experiment.outcomes: {path: ..., columns: {customer_id: ...}}"
                    )
        return self

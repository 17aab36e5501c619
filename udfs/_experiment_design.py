"""Experiment settings (``vars: experiment:`` in cpo.yml) and design help.

Shared by the experiment steps, and by ``plan``, which prints `design_table`: for each treatment
arm and proportion metric with a ``baseline``, the sample size needed per arm to detect the
metric's ``mde`` and the MDE reachable with the current customers.

The settings are one pydantic v2 model, `ExperimentVars`, registered as the ``vars.experiment``
section: ``cpo.yml`` is checked against it when it loads (a bad value names its key path, e.g.
``vars.experiment.metrics[2].type``, its line and the accepted values), and the steps read the
instance the loader made (`experiment_settings`). `experiment_config` adds what needs more than
the section: the default arms (the tones). Settings (all optional; without ``metrics`` the
analysis is empty)::

    experiment:
      id: tone_test_2026_11          # experiment_id of the assignments
      control: control               # name of the control arm
      arms:                          # weights are relative (any non-negative numbers)
        - {name: control, weight: 1}
        - {name: urgent, weight: 1}
        - {name: holdout, weight: 1, message: none}   # receives nothing: a holdout
      assignments:                   # an assignment made elsewhere (arm names are then free)
        {path: data/assignments.csv, columns: {customer_id: id, arm: group}}
      outcomes:                      # one row per customer, one column per outcome
        {path: data/outcomes.csv, columns: {customer_id: id}}
      metrics:                       # see `MetricVars`
        - {name: open_rate, type: proportion, role: primary, event: open, mde: 0.1}
        - {name: spend, type: mean, role: secondary, column: spend}
      alpha: 0.05
      correction: holm               # holm | bh
      min_power: 0.8
      mde: 0.10                      # default relative MDE for metrics without one
      effect: relative               # relative | absolute: what `estimate` reports
      max_rejected_share: 0.2        # more rejected events than this: results invalid
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cpo.errors import ConfigurationError
from cpo.experiments import stats
from cpo.experiments.settings import (  # noqa: F401 (re-exported for the steps)
    DIRECTIONS,
    EVENTS,
    METRIC_TYPES,
    ROLES,
    VALUES,
    ArmVars,
    AssignmentsVars,
    ErrorFactory,
    Event,
    EventsVars,
    ExperimentVars,
    FileColumns,
    Fraction,
    MetricVars,
    Name,
    OutcomesVars,
)


@dataclass(frozen=True)
class Arm:
    """An experiment arm, its planned allocation weight, and whether it is a holdout."""

    name: str
    weight: float
    holdout: bool = False


@dataclass(frozen=True)
class Metric:
    """A validated metric (see `MetricVars` for the meaning of each field)."""

    name: str
    type: str
    role: str
    direction: str = "increase"
    event: str | None = None
    column: str | None = None
    value: str = "count"
    numerator: str | None = None
    denominator: str | None = None
    covariate: str | None = None
    mde: float = 0.1
    baseline: float | None = None

    @property
    def sign(self) -> int:
        """+1 when an increase is better, −1 when a decrease is better."""
        return 1 if self.direction == "increase" else -1


@dataclass(frozen=True)
class ExperimentConfig:
    """The validated ``vars.experiment`` block, as the steps use it."""

    id: str
    control: str
    arms: tuple[Arm, ...]
    metrics: tuple[Metric, ...]
    alpha: float = 0.05
    correction: str = "holm"
    min_power: float = 0.8
    relative: bool = True
    external: bool = False
    outcomes: bool = False
    max_rejected_share: float = 0.2

    @property
    def treatments(self) -> tuple[Arm, ...]:
        """Every arm but the control."""
        return tuple(a for a in self.arms if a.name != self.control)

    def weight(self, arm: str) -> float:
        """The planned weight of `arm` (0 for an arm that is not configured)."""
        return next((a.weight for a in self.arms if a.name == arm), 0.0)

    def family(self, role: str) -> tuple[Metric, ...]:
        """The metrics of one role (``primary``, ``secondary``, ``guardrail``)."""
        return tuple(m for m in self.metrics if m.role == role)


def experiment_settings(ctx: Any) -> ExperimentVars:
    """``vars.experiment``: the model that checked it when ``cpo.yml`` loaded."""
    return ctx.config.section("vars.experiment", ExperimentVars)


def _error(key: str, message: str) -> ConfigurationError:
    return ConfigurationError(message, path="cpo.yml", key=key)


def experiment_config(
    v: ExperimentVars, default_arms: Sequence[str] = ("control",), error: ErrorFactory = _error
) -> ExperimentConfig:
    """The steps' view of ``vars.experiment``, with the default arms filled in.

    Args:
        v: The validated settings (`experiment_settings`).
        default_arms: Arm names used when ``arms`` is not set (control first, equal weights).
        error: Builds the ConfigurationError for a key path (``ctx.config.document.error``).

    Raises:
        ConfigurationError: The control arm is not among the arms (which may come from the
            tones, so the section alone cannot tell).
    """
    arms = tuple(
        Arm(a.name, float(a.weight), a.message == "none")
        for a in (v.arms or [ArmVars(name=n, weight=1) for n in default_arms])
    )
    if v.control not in {a.name for a in arms}:
        raise error(
            "vars.experiment.control",
            f"control arm {v.control!r} is not among the arms {[a.name for a in arms]}",
        )
    metrics = tuple(
        Metric(
            **{
                **m.model_dump(exclude={"mde"}),
                "mde": m.mde if m.mde is not None else v.mde,
            }
        )
        for m in v.metrics or []
    )
    return ExperimentConfig(
        id=v.id,
        control=v.control,
        arms=arms,
        metrics=metrics,
        alpha=v.alpha,
        correction=v.correction,
        min_power=v.min_power,
        relative=v.effect == "relative",
        external=v.assignments is not None,
        outcomes=v.outcomes is not None,
        max_rejected_share=v.max_rejected_share,
    )


def family_size(config: ExperimentConfig, role: str = "primary") -> int:
    """Tests in one multiple-comparison family of the overall results: treatment arms × the
    metrics of `role` (primary metrics decide; secondary ones are corrected on their own)."""
    return max(len(config.treatments) * len(config.family(role)), 1)


@dataclass(frozen=True)
class DesignRow:
    """Sample size and reachable MDE for one treatment arm and one proportion metric.

    Attributes:
        arm, metric: The comparison (arm against control).
        baseline: Expected control rate; mde_relative: the metric's configured relative MDE.
        alpha_per_test: α / (treatment arms × metrics of the same role): the Bonferroni bound of
            the metric's Holm family (α for guardrails).
        n_required_per_arm: Units per arm to detect the MDE with `power` (unrounded).
        n_control, n_treatment: Units each arm gets from `n_customers` and the weights.
        mde_reachable_relative: Relative lift detectable with those units (NaN if none).
        power_at_mde: Power at the configured MDE with those units.
        note: Why a value is missing, if it is.
    """

    arm: str
    metric: str
    baseline: float
    mde_relative: float
    alpha_per_test: float
    n_required_per_arm: float
    n_control: float
    n_treatment: float
    mde_reachable_relative: float
    power_at_mde: float
    note: str | None = None


def design_table(config: ExperimentConfig, n_customers: int, power: float = 0.8) -> list[DesignRow]:
    """Design help for ``plan``: sample size per arm and the MDE reachable with `n_customers`.

    Only proportion metrics with a ``baseline`` can be planned (means and ratios need a variance
    that is only known after the experiment). Unequal arms use the harmonic mean of the two arm
    sizes as the equivalent per-arm size. The reachable MDE is the smallest detectable increase
    (`cpo.experiments.stats.mde`), also for metrics where a decrease is better.

    Args:
        config: The validated experiment settings.
        n_customers: Customers available for the experiment.
        power: Target power (default `min_power` of the settings is usually passed).
    """
    total = sum(a.weight for a in config.arms) or 1.0
    n_control = n_customers * config.weight(config.control) / total
    rows = []
    for arm in config.treatments:
        n_treat = n_customers * arm.weight / total
        n_eff = 2 / (1 / n_control + 1 / n_treat) if n_control > 0 and n_treat > 0 else 0.0
        for m in config.metrics:
            if m.type != "proportion" or m.baseline is None:
                continue
            # Guardrails are tested one-sided at alpha (planned here two-sided at alpha).
            alpha = config.alpha / (1 if m.role == "guardrail" else family_size(config, m.role))
            delta = m.sign * m.mde * m.baseline
            needed = stats.sample_size_per_arm(m.baseline, delta, alpha, power)
            reach, achieved, note = math.nan, math.nan, None
            if n_eff > 0:
                reach = stats.mde(m.baseline, n_eff, alpha, power) / m.baseline
                achieved = stats.power(m.baseline, delta, n_eff, alpha)
            else:
                note = "no customers in this arm or the control"
            if math.isnan(reach) and note is None:
                note = "no lift is detectable with this many customers"
            rows.append(
                DesignRow(
                    arm.name,
                    m.name,
                    m.baseline,
                    m.mde,
                    alpha,
                    needed,
                    n_control,
                    n_treat,
                    reach,
                    achieved,
                    note,
                )
            )
    return rows


def plan(ctx: Any) -> tuple[str, list[dict[str, Any]]]:
    """``plan`` hook: the design table for the configured arms and metrics.

    Returns:
        A title and one row per treatment arm x plannable metric.
    """
    tones = ctx.var("generation.tones", [], expect=list)
    config = experiment_config(
        experiment_settings(ctx), ["control", *tones], error=ctx.config.document.error
    )
    n_customers = int(ctx.sql("select count(*) from assignments").fetchone()[0])
    rows = [
        {
            "arm": row.arm,
            "metric": row.metric,
            "baseline": row.baseline,
            "mde (relative)": row.mde_relative,
            "needed per arm": math.ceil(row.n_required_per_arm),
            "customers per arm": round(row.n_treatment),
            "reachable mde": row.mde_reachable_relative,
            "power at mde": row.power_at_mde,
        }
        for row in design_table(config, n_customers, ctx.var("experiment.min_power", 0.8))
    ]
    return f"Experiment design ({n_customers:,} customers assigned)", rows

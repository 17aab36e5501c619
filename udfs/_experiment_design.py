"""Experiment settings (``vars: experiment:`` in cpo.yml) and design help.

Shared by the ``simulated_events`` and ``experiment_results`` steps, and by ``plan``, which prints
`design_table`: for each treatment arm and proportion metric with a ``baseline``, the sample size
needed per arm to detect the metric's ``mde`` and the MDE reachable with the current customers.

Settings (all optional; without ``metrics`` the analysis is empty)::

    experiment:
      id: tone_test_2026_11          # experiment_id of the assignments
      control: control               # name of the control arm
      arms: [{name: control, weight: 1}, {name: urgent, weight: 1}, ...]
      metrics:                       # see `Metric`
        - {name: open_rate, type: proportion, role: primary, event: open, mde: 0.1, baseline: 0.2}
      alpha: 0.05
      correction: holm               # holm | bh
      min_power: 0.8
      mde: 0.10                      # default relative MDE for metrics without one
      effect: relative               # relative | absolute: what `estimate` reports
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cpo import stats
from cpo.errors import ConfigurationError

EVENTS = ("delivered", "open", "click", "conversion", "unsubscribe")
METRIC_TYPES = ("proportion", "mean", "ratio")
ROLES = ("primary", "secondary", "guardrail")
DIRECTIONS = ("increase", "decrease")
VALUES = ("count", "revenue")

ErrorFactory = Callable[[str, str], ConfigurationError]


def _default_error(key: str, message: str) -> ConfigurationError:
    return ConfigurationError(message, path="cpo.yml", key=key)


@dataclass(frozen=True)
class Arm:
    """An experiment arm and its planned allocation weight."""

    name: str
    weight: float


@dataclass(frozen=True)
class Metric:
    """A metric declared under ``experiment.metrics``.

    Attributes:
        name: Metric name (the ``metric`` column of the results).
        type: ``proportion`` (share of customers with ≥ 1 `event`), ``mean`` (per-customer sum
            of `value` over `event`s, customers without events count as 0) or ``ratio`` (sum of
            `numerator` events / sum of `denominator` events, delta method).
        role: ``primary``, ``secondary`` or ``guardrail``.
        direction: ``increase`` or ``decrease``: which way is better.
        event: The event of a proportion or mean metric.
        value: ``count`` (events) or ``revenue`` (their revenue), for a mean metric.
        numerator, denominator: Events counted by a ratio metric.
        covariate: A numeric ``stg_customers`` column used for CUPED (not for ratios).
        mde: Minimum detectable effect, relative to the control mean (planning and power).
        baseline: Expected control rate of a proportion metric (planning only).
    """

    name: str
    type: str
    role: str
    direction: str = "increase"
    event: str | None = None
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
    """The validated ``vars.experiment`` block."""

    id: str
    control: str
    arms: tuple[Arm, ...]
    metrics: tuple[Metric, ...]
    alpha: float = 0.05
    correction: str = "holm"
    min_power: float = 0.8
    relative: bool = True

    @property
    def treatments(self) -> tuple[Arm, ...]:
        """Every arm but the control."""
        return tuple(a for a in self.arms if a.name != self.control)

    def weight(self, arm: str) -> float:
        """The planned weight of `arm` (0 for an arm that is not configured)."""
        return next((a.weight for a in self.arms if a.name == arm), 0.0)


def _choice(
    raw: Mapping[str, Any],
    key: str,
    allowed: Sequence[str],
    default: str | None,
    where: str,
    error: ErrorFactory,
) -> str:
    value = raw.get(key, default)
    if value not in allowed:
        raise error(f"{where}.{key}", f"must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _fraction(
    raw: Mapping[str, Any], key: str, default: float | None, where: str, error: ErrorFactory
) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise error(f"{where}.{key}", f"must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _event(raw: Mapping[str, Any], key: str, where: str, error: ErrorFactory) -> str:
    value = raw.get(key)
    if value not in EVENTS:
        raise error(f"{where}.{key}", f"must be one of {', '.join(EVENTS)}, got {value!r}")
    return str(value)


def parse_metric(
    raw: Any, index: int, default_mde: float, error: ErrorFactory = _default_error
) -> Metric:
    """Validate one entry of ``experiment.metrics``."""
    where = f"vars.experiment.metrics[{index}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise error(
            where,
            "each metric needs at least a name, a type and an event, e.g. "
            "{name: open_rate, type: proportion, role: primary, event: open}",
        )
    kind = _choice(raw, "type", METRIC_TYPES, None, where, error)
    fields: dict[str, Any] = {
        "name": raw["name"],
        "type": kind,
        "role": _choice(raw, "role", ROLES, "secondary", where, error),
        "direction": _choice(raw, "direction", DIRECTIONS, "increase", where, error),
        "mde": _fraction(raw, "mde", default_mde, where, error),
        "baseline": _fraction(raw, "baseline", None, where, error),
    }
    if kind == "ratio":
        fields["numerator"] = _event(raw, "numerator", where, error)
        fields["denominator"] = _event(raw, "denominator", where, error)
        if raw.get("covariate"):
            raise error(
                f"{where}.covariate",
                "CUPED is supported for proportion and mean "
                "metrics only; remove the covariate of a ratio",
            )
    else:
        fields["event"] = _event(raw, "event", where, error)
        fields["value"] = _choice(raw, "value", VALUES, "count", where, error)
        covariate = raw.get("covariate")
        if covariate is not None and not (isinstance(covariate, str) and covariate):
            raise error(f"{where}.covariate", f"must be a stg_customers column, got {covariate!r}")
        fields["covariate"] = covariate
    return Metric(**fields)


def experiment_config(
    raw: Any, default_arms: Sequence[str] = ("control",), error: ErrorFactory = _default_error
) -> ExperimentConfig:
    """Validate the ``vars.experiment`` mapping.

    Args:
        raw: The mapping (``ctx.var("experiment")``).
        default_arms: Arm names used when ``arms`` is not set (control first, equal weights).
        error: Builds the ConfigurationError for a key path (``ctx.config.document.error``).

    Raises:
        ConfigurationError: A setting is missing or invalid (naming its key path).
    """
    if not isinstance(raw, Mapping):
        raise error("vars.experiment", "must be a mapping with at least 'metrics:'")
    where = "vars.experiment"
    control = str(raw.get("control", "control"))
    arms_raw = raw.get("arms") or [{"name": a, "weight": 1} for a in default_arms]
    arms = []
    for i, arm in enumerate(arms_raw):
        name = arm.get("name") if isinstance(arm, Mapping) else None
        weight = arm.get("weight") if isinstance(arm, Mapping) else None
        if (
            not name
            or isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or weight < 0
        ):
            raise error(
                f"{where}.arms[{i}]", f"each arm needs a name and a weight >= 0, got {arm!r}"
            )
        arms.append(Arm(str(name), float(weight)))
    if control not in {a.name for a in arms}:
        raise error(
            f"{where}.control",
            f"control arm {control!r} is not among the arms {[a.name for a in arms]}",
        )
    default_mde = _fraction(raw, "mde", 0.1, where, error)
    # No metrics declared yet is allowed (the analysis is then empty); a declared list must
    # be a non-empty list of valid metrics.
    metrics_raw = raw.get("metrics", [])
    if not isinstance(metrics_raw, list) or ("metrics" in raw and not metrics_raw):
        raise error(
            f"{where}.metrics",
            "declare at least one metric, e.g. [{name: open_rate, "
            "type: proportion, role: primary, event: open}]",
        )
    metrics = tuple(parse_metric(m, i, default_mde, error) for i, m in enumerate(metrics_raw))
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise error(f"{where}.metrics", f"metric names must be unique, got {names}")
    effect = _choice(raw, "effect", ("relative", "absolute"), "relative", where, error)
    return ExperimentConfig(
        id=str(raw.get("id", "experiment")),
        control=control,
        arms=tuple(arms),
        metrics=metrics,
        alpha=_fraction(raw, "alpha", 0.05, where, error),
        correction=_choice(raw, "correction", ("holm", "bh"), "holm", where, error),
        min_power=_fraction(raw, "min_power", 0.8, where, error),
        relative=effect == "relative",
    )


def family_size(config: ExperimentConfig) -> int:
    """Tests in the multiple-comparison family of the overall results: treatment arms × metrics."""
    return max(len(config.treatments) * len(config.metrics), 1)


@dataclass(frozen=True)
class DesignRow:
    """Sample size and reachable MDE for one treatment arm and one proportion metric.

    Attributes:
        arm, metric: The comparison (arm against control).
        baseline: Expected control rate; mde_relative: the metric's configured relative MDE.
        alpha_per_test: α / (treatment arms × metrics): the Bonferroni bound of the Holm family.
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
    (`cpo.stats.mde`), also for metrics where a decrease is better.

    Args:
        config: The validated experiment settings.
        n_customers: Customers available for the experiment.
        power: Target power (default `min_power` of the settings is usually passed).
    """
    total = sum(a.weight for a in config.arms) or 1.0
    alpha = config.alpha / family_size(config)
    n_control = n_customers * config.weight(config.control) / total
    rows = []
    for arm in config.treatments:
        n_treat = n_customers * arm.weight / total
        n_eff = 2 / (1 / n_control + 1 / n_treat) if n_control > 0 and n_treat > 0 else 0.0
        for m in config.metrics:
            if m.type != "proportion" or m.baseline is None:
                continue
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
    raw = ctx.var("experiment", {}, expect=dict)
    tones = ctx.var("generation.tones", [], expect=list)
    config = experiment_config(raw, ["control", *tones])
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

"""Gaussian-posterior comparison of two arms (chance to win, expected loss)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cpo.errors import ConfigurationError
from cpo.experiments.stats.distributions import norm_cdf, norm_isf, norm_pdf, norm_sf
from cpo.experiments.stats.frequentist import _effect, relative_se
from cpo.experiments.stats.sufficient import _ZERO_CONTROL, NAN, Stats, _check_alpha


@dataclass(frozen=True)
class BayesianResult:
    """A Gaussian-posterior comparison of treatment and control.

    Attributes:
        estimate: Posterior mean of the effect.
        ci_low, ci_high: Central credible interval (95% by default).
        sd: Posterior standard deviation.
        chance_to_win: Posterior probability that the effect is positive.
        risk: (expected loss if control is chosen, expected loss if treatment is chosen).
        absolute_effect: ``m_t − m_c``.
        relative: Whether the effect is relative.
        reason: Why values are NaN, if they are.
    """

    estimate: float
    ci_low: float
    ci_high: float
    sd: float
    chance_to_win: float
    risk: tuple[float, float]
    absolute_effect: float
    relative: bool
    reason: str | None = None


# --------------------------------------------------------------------------- Bayesian


def gaussian_expected_loss(mean: float, sd: float) -> tuple[float, float]:
    """Closed-form ``(E[max(X, 0)], E[max(−X, 0)])`` for X ~ N(mean, sd²)."""
    if sd == 0:
        return max(mean, 0.0), max(-mean, 0.0)
    z = mean / sd
    density = sd * norm_pdf(z)
    return (
        mean * norm_cdf(z) + density,
        -mean * norm_cdf(-z) + density,
    )


def bayesian_test(
    control: Stats,
    treatment: Stats,
    *,
    relative: bool = True,
    prior_mean: float = 0.0,
    prior_variance: float | None = None,
    credible_level: float = 0.95,
) -> BayesianResult:
    """Gaussian-posterior comparison of treatment against control.

    The likelihood is N(estimate, se²) with the same estimate and delta-method standard error as
    `frequentist_test`; the prior is flat unless `prior_variance` is given.

    Args:
        control: Control arm statistics.
        treatment: Treatment arm statistics.
        relative: Work on the relative effect instead of the absolute difference.
        prior_mean: Prior mean of the effect (used only with `prior_variance`).
        prior_variance: Prior variance of the effect; None for a flat prior.
        credible_level: Mass of the central credible interval.

    Returns:
        A `BayesianResult`; NaNs with a `reason` for degenerate data.

    Raises:
        ConfigurationError: prior_variance is not positive or credible_level not in (0, 1).
    """
    if prior_variance is not None and not prior_variance > 0:
        raise ConfigurationError(
            f"prior_variance must be positive (or None for a flat prior), got {prior_variance}"
        )
    _check_alpha(credible_level, "credible_level")
    effect = _effect(control, treatment)
    mc, mt = effect.control_mean, effect.treatment_mean
    absolute = mt - mc
    var_t, var_c = effect.var_treatment, effect.var_control
    reason = effect.reason or (None if var_t + var_c > 0 else "both arms have zero variance")
    if reason is None and relative and not mc > 0:
        reason = _ZERO_CONTROL if mc == 0 else "control mean is negative: relative undefined"
    if reason is not None:
        return BayesianResult(NAN, NAN, NAN, NAN, NAN, (NAN, NAN), absolute, relative, reason)
    if relative:
        estimate, variance = mt / mc - 1.0, relative_se(mc, mt, var_c, var_t) ** 2
    else:
        estimate, variance = absolute, var_t + var_c
    if not variance > 0:
        why = "the effect has zero variance (no events in an arm)"
        return BayesianResult(NAN, NAN, NAN, NAN, NAN, (NAN, NAN), absolute, relative, why)
    mean = estimate
    if prior_variance is not None:
        precision = 1.0 / variance + 1.0 / prior_variance
        mean = (estimate / variance + prior_mean / prior_variance) / precision
        variance = 1.0 / precision
    sd = math.sqrt(variance)
    z = norm_isf((1.0 - credible_level) / 2)
    return BayesianResult(
        estimate=mean,
        ci_low=mean - z * sd,
        ci_high=mean + z * sd,
        sd=sd,
        chance_to_win=norm_sf(-mean / sd),
        risk=gaussian_expected_loss(mean, sd),
        absolute_effect=absolute,
        relative=relative,
    )

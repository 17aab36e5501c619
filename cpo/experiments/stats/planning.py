"""Planning: sample size per arm, power and minimum detectable effect for proportions."""

from __future__ import annotations

import math

from cpo.errors import ConfigurationError
from cpo.experiments.stats.distributions import norm_cdf, norm_isf, norm_ppf
from cpo.experiments.stats.sufficient import NAN, _check_alpha

# --------------------------------------------------------------------------- planning


def _check_plan(baseline_rate: float, alpha: float, power_: float | None = None) -> None:
    if not 0.0 < baseline_rate < 1.0:
        raise ConfigurationError(
            f"baseline_rate must be a proportion strictly between 0 and 1, got {baseline_rate}"
        )
    _check_alpha(alpha)
    if power_ is not None:
        _check_alpha(power_, "power")


def _plan_terms(p: float, d: float, alpha: float) -> tuple[float, float]:
    """``(z₁₋α/₂·√(2p(1−p)), s₁ = √(p(1−p) + (p+δ)(1−p−δ)))`` of the sample-size formula."""
    z_a = norm_isf(alpha / 2)
    return z_a * math.sqrt(2 * p * (1 - p)), math.sqrt(p * (1 - p) + (p + d) * (1 - p - d))


def sample_size_per_arm(
    baseline_rate: float, mde_absolute: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Units per arm to detect an absolute lift in a conversion rate (two-sided, unrounded).

    ``n = (z₁₋α/₂·√(2p(1−p)) + z_power·√(p(1−p) + (p+δ)(1−p−δ)))² / δ²``.

    Raises:
        ConfigurationError: A rate, alpha or power is out of range, or δ = 0.
    """
    _check_plan(baseline_rate, alpha, power)
    p, d = baseline_rate, mde_absolute
    if d == 0 or not 0.0 < p + d < 1.0:
        raise ConfigurationError(
            f"mde_absolute must be non-zero and keep baseline_rate + mde_absolute in (0, 1), "
            f"got baseline {p} and mde {d}"
        )
    null, s1 = _plan_terms(p, d, alpha)
    root = null + norm_ppf(power) * s1
    return root**2 / d**2


def power(
    baseline_rate: float, mde_absolute: float, n_per_arm: float, alpha: float = 0.05
) -> float:
    """Power of the two-sided test with `n_per_arm` units: the inverse of `sample_size_per_arm`.

    Solves the sample-size formula for z_power: power = Φ((|δ|√n − z₁₋α/₂√(2p(1−p))) / s₁)
    with s₁ = √(p(1−p) + (p+δ)(1−p−δ)).
    """
    _check_plan(baseline_rate, alpha)
    p, d = baseline_rate, mde_absolute
    if not 0.0 < p + d < 1.0 or n_per_arm <= 0:
        raise ConfigurationError(
            f"need baseline_rate + mde_absolute in (0, 1) and n_per_arm > 0, got baseline {p}, "
            f"mde {d}, n {n_per_arm}"
        )
    null, s1 = _plan_terms(p, d, alpha)
    z_b = (abs(d) * math.sqrt(n_per_arm) - null) / s1
    return norm_cdf(z_b)


def mde(baseline_rate: float, n_per_arm: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest positive absolute lift detectable with `n_per_arm` units (solved numerically).

    Returns:
        δ > 0 with ``sample_size_per_arm(baseline_rate, δ, alpha, power) == n_per_arm``, or NaN
        when even δ → 1 − baseline_rate needs more units than `n_per_arm`.
    """
    _check_plan(baseline_rate, alpha, power)
    if n_per_arm <= 0:
        raise ConfigurationError(f"n_per_arm must be positive, got {n_per_arm}")
    hi = (1.0 - baseline_rate) * (1 - 1e-12)

    def gap(d: float) -> float:
        return sample_size_per_arm(baseline_rate, d, alpha, power) - n_per_arm

    if gap(hi) > 0:
        return NAN
    from scipy import optimize

    return float(optimize.brentq(gap, 1e-12, hi, xtol=1e-15, rtol=1e-12))

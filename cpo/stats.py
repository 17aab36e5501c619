"""Experiment statistics: pure, deterministic functions on sufficient statistics (no I/O).

Conventions (every number in ``experiment_results`` can be recomputed by hand from these):

* **Inputs** are sufficient statistics per arm, so SQL aggregates can feed them directly:
  `MeanStats(n, sum, sum_squares)`, `ProportionStats(n, successes)` and
  `RatioStats(n, sum_num, sum_num_sq, sum_den, sum_den_sq, sum_num_den)` (a ratio metric such as
  clicks per open, with ``n`` randomisation units). Each has ``mean`` and ``variance``: a mean's
  variance is the sample variance (divisor n − 1); a proportion's is p(1 − p); a ratio's is the
  delta-method unit variance ``(s²_num − 2 R s_num,den + R² s²_den) / mean_den²`` (n − 1 divisors),
  so that ``variance / n`` is the variance of the ratio estimate in every case.
* **Effects**: absolute ``m_t − m_c``; relative ``m_t / m_c − 1`` (needs m_c > 0), with
  delta-method standard error ``√(v_t / (n_t m_c²) + v_c m_t² / (n_c m_c⁴))``.
* **p-values always test the difference of means** (Welch t; z for proportions), whatever scale
  is reported. A relative interval is Fieller's interval for m_t / m_c with the test's own
  critical value, minus 1: it excludes 0 exactly when the test rejects, and its lower bound is
  clamped at −100 % (a ratio of non-negative means is never negative). When m_c is not
  distinguishable from 0 the interval is unbounded (+inf upper bound).
* **Frequentist** (`frequentist_test`): Welch–Satterthwaite degrees of freedom
  ``(Σ c_i)² / Σ c_i² / (n_i − 1)`` over the variance components ``c_i`` above; Student-t
  intervals and p-values, p-values taken from survival functions (``t.sf``) so tiny values do not
  underflow to 0. One-sided intervals are open on one side (±inf).
* **Sequential** (``sequential=True``): the always-valid asymptotic confidence sequence of
  Waudby-Smith et al. (2023). With ``N = n_c + n_t`` and tuning ``N*``,
  ``ρ² = (−2 ln α + ln(−2 ln α + 1)) / N*`` and the half-width is
  ``se·√N·√(2(Nρ² + 1)/(N²ρ²)·ln(√(Nρ² + 1)/α))``. Its p-value is the smallest α at which the
  sequence excludes 0, found with `scipy.optimize.brentq` on ln α. A one-sided sequential test
  uses the bound of the two-sided sequence at level α (valid, slightly conservative).
* **Bayesian** (`bayesian_test`): Gaussian posterior on the effect (same estimate and standard
  error as above; flat prior unless ``prior_variance`` is given), normal credible interval,
  ``chance_to_win = P(effect > 0)`` and ``risk = (E[max(effect, 0)], E[max(−effect, 0)])``: the
  expected loss of choosing control, then of choosing treatment (closed form
  ``E[max(X, 0)] = μΦ(μ/σ) + σφ(μ/σ)``).
* **Small samples** (`proportion_test`): Fisher's exact test when any expected cell count of the
  2×2 table is below 5, with a Newcombe (Wilson-score) interval for the difference and a MOVER-R
  interval for the relative lift; the result's ``method`` says which test was used.
* **Degenerate data never raises**: a zero control mean makes the relative effect NaN with a
  ``reason`` (the absolute effect is still reported in ``absolute_effect``); n < 2 in an arm or
  zero variance gives NaNs and a reason. Invalid *parameters* (alpha, method, ...) raise
  `ConfigurationError`; invalid *data* (negative counts, mismatched lengths) raise `ModelError`.
* **Planning**: ``n = (z₁₋α/₂·√(2p(1−p)) + z_power·√(p(1−p) + (p+δ)(1−p−δ)))² / δ²`` per arm,
  unrounded; `power` inverts it in closed form, `mde` numerically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

from cpo.errors import ConfigurationError, ModelError

SRM_ALPHA = 0.001
"""Warn about a sample ratio mismatch when `srm_pvalue` is below this."""

FISHER_MIN_EXPECTED = 5.0
"""`proportion_test` switches to Fisher's exact test below this expected cell count."""

ALTERNATIVES = ("two-sided", "greater", "less")
NAN = math.nan
_ZERO_CONTROL = "control mean is zero: relative effect undefined (see absolute_effect)"


# --------------------------------------------------------------------------- sufficient statistics


@dataclass(frozen=True)
class MeanStats:
    """Sufficient statistics of a per-unit metric in one arm.

    Attributes:
        n: Number of units.
        sum: Sum of the metric over units.
        sum_squares: Sum of the squared metric over units.
    """

    n: int
    sum: float
    sum_squares: float

    def __post_init__(self) -> None:
        _check_count("MeanStats.n", self.n)

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> MeanStats:
        """Build the statistics from raw per-unit values."""
        arr = np.asarray(values, dtype=float)
        return cls(int(arr.size), float(arr.sum()), float(np.dot(arr, arr)))

    @property
    def mean(self) -> float:
        """The sample mean (NaN when n = 0)."""
        return self.sum / self.n if self.n > 0 else NAN

    @property
    def variance(self) -> float:
        """The sample variance with divisor n − 1 (NaN when n < 2)."""
        if self.n < 2:
            return NAN
        return max(self.sum_squares - self.sum * self.sum / self.n, 0.0) / (self.n - 1)


@dataclass(frozen=True)
class ProportionStats:
    """Sufficient statistics of a binary metric (conversion) in one arm.

    Attributes:
        n: Number of units.
        successes: Units with the event.
    """

    n: int
    successes: int

    def __post_init__(self) -> None:
        _check_count("ProportionStats.n", self.n)
        if not 0 <= self.successes <= self.n:
            raise ModelError(
                f"ProportionStats.successes must be between 0 and n={self.n}, got "
                f"{self.successes}; check the aggregate that counts successes per arm"
            )

    @property
    def mean(self) -> float:
        """The proportion p (NaN when n = 0)."""
        return self.successes / self.n if self.n > 0 else NAN

    @property
    def variance(self) -> float:
        """The Bernoulli variance p(1 − p)."""
        p = self.mean
        return p * (1.0 - p)


@dataclass(frozen=True)
class RatioStats:
    """Sufficient statistics of a ratio metric (sum of numerators / sum of denominators).

    Attributes:
        n: Number of randomisation units.
        sum_num, sum_num_sq: Sum and sum of squares of the per-unit numerator.
        sum_den, sum_den_sq: Sum and sum of squares of the per-unit denominator.
        sum_num_den: Sum of the per-unit products numerator × denominator.
    """

    n: int
    sum_num: float
    sum_num_sq: float
    sum_den: float
    sum_den_sq: float
    sum_num_den: float

    def __post_init__(self) -> None:
        _check_count("RatioStats.n", self.n)

    @property
    def mean(self) -> float:
        """The ratio of sums (NaN when the denominator sum is 0)."""
        return self.sum_num / self.sum_den if self.sum_den != 0 else NAN

    @property
    def variance(self) -> float:
        """Delta-method unit variance: ``variance / n`` is the variance of `mean`."""
        if self.n < 2 or self.sum_den == 0:
            return NAN
        n = self.n
        var_num = (self.sum_num_sq - self.sum_num**2 / n) / (n - 1)
        var_den = (self.sum_den_sq - self.sum_den**2 / n) / (n - 1)
        cov = (self.sum_num_den - self.sum_num * self.sum_den / n) / (n - 1)
        mean_den = self.sum_den / n
        r = self.mean
        return max(var_num - 2 * r * cov + r * r * var_den, 0.0) / mean_den**2


def ratio_stats(
    numerators: Sequence[float] | np.ndarray, denominators: Sequence[float] | np.ndarray
) -> RatioStats:
    """Build `RatioStats` from per-unit numerators and denominators (e.g. clicks and opens)."""
    mismatch = (
        "ratio_stats needs one denominator per numerator, got {} numerators and {} denominators"
    )
    return RatioStats(*_paired_sums(numerators, denominators, mismatch))


def _paired_sums(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, mismatch: str
) -> tuple[int, float, float, float, float, float]:
    """``(n, Σa, Σa², Σb, Σb², Σab)`` of two per-unit arrays; `mismatch` formats a length error."""
    aa = np.asarray(a, dtype=float)
    ba = np.asarray(b, dtype=float)
    if aa.shape != ba.shape:
        raise ModelError(mismatch.format(aa.size, ba.size))
    sums = (aa.sum(), np.dot(aa, aa), ba.sum(), np.dot(ba, ba), np.dot(aa, ba))
    return (int(aa.size), *(float(v) for v in sums))


Stats = MeanStats | ProportionStats | RatioStats


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FrequentistResult:
    """A treatment-vs-control comparison.

    Attributes:
        estimate: The effect (relative or absolute, see `relative`); NaN if undefined.
        ci_low, ci_high: The confidence interval (or confidence sequence) bounds.
        se: Standard error of `estimate`.
        p_value: p-value for the `alternative` (always-valid when `sequential`).
        df: Welch–Satterthwaite degrees of freedom.
        absolute_effect: ``m_t − m_c``, reported even when the relative effect is undefined.
        control_mean, treatment_mean: The arm means.
        relative, alternative, alpha, sequential: The options used.
        method: ``welch-t``, ``sequential-cs``, ``fisher-exact`` or ``post-stratified``.
        reason: Why values are NaN, if they are.
    """

    estimate: float
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    df: float
    absolute_effect: float
    control_mean: float
    treatment_mean: float
    relative: bool
    alternative: str
    alpha: float
    sequential: bool
    method: str
    reason: str | None = None


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


@dataclass(frozen=True)
class CupedResult:
    """CUPED-adjusted statistics for two arms, ready for `frequentist_test`.

    Attributes:
        control, treatment: `MeanStats` of ``y − θ(x − x̄)`` per arm.
        theta: The pooled within-arm regression coefficient of y on x.
    """

    control: MeanStats
    treatment: MeanStats
    theta: float


@dataclass(frozen=True)
class CupedStats:
    """Per-arm sufficient statistics of a metric y and its pre-period covariate x.

    Attributes:
        n: Units; sum_y, sum_y2, sum_x, sum_x2, sum_xy: sums of y, y², x, x², x·y.
    """

    n: int
    sum_y: float
    sum_y2: float
    sum_x: float
    sum_x2: float
    sum_xy: float

    def __post_init__(self) -> None:
        _check_count("CupedStats.n", self.n)

    @classmethod
    def from_arrays(
        cls, y: Sequence[float] | np.ndarray, x: Sequence[float] | np.ndarray
    ) -> CupedStats:
        """Build the statistics from per-unit metric values y and covariate values x."""
        mismatch = (
            "CUPED needs one covariate value per unit, got {} metric values and {} covariate values"
        )
        return cls(*_paired_sums(y, x, mismatch))


# --------------------------------------------------------------------------- validation helpers


def _check_count(name: str, n: int) -> None:
    if n < 0:
        raise ModelError(f"{name} must be a non-negative count, got {n}")


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not 0.0 < alpha < 1.0:
        raise ConfigurationError(
            f"{name} must be strictly between 0 and 1 (e.g. 0.05), got {alpha}"
        )


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ConfigurationError(
            f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}"
        )


# --------------------------------------------------------------------------- frequentist core


@dataclass(frozen=True)
class _Effect:
    """Arm means and the variance components ``(c_i, n_i)`` of each arm's mean.

    ``treatment`` components add up to Var(m_t), ``control`` ones to Var(m_c); their sum is the
    variance of the difference m_t − m_c, which every p-value tests whatever the reported scale.
    """

    control_mean: float
    treatment_mean: float
    treatment: tuple[tuple[float, int], ...]
    control: tuple[tuple[float, int], ...]
    reason: str | None

    @property
    def components(self) -> tuple[tuple[float, int], ...]:
        return self.treatment + self.control

    @property
    def var_treatment(self) -> float:
        return sum(c for c, _ in self.treatment)

    @property
    def var_control(self) -> float:
        return sum(c for c, _ in self.control)


def _effect(control: Stats, treatment: Stats) -> _Effect:
    """Arm means and the variance components of the difference of means."""
    mc, mt = control.mean, treatment.mean
    nc, nt = control.n, treatment.n
    small = f"need at least 2 units per arm, got control n={nc}, treatment n={nt}"
    reason = _degenerate(small if nc < 2 or nt < 2 else None, mc, mt, "an arm mean is undefined")
    if reason is not None:
        return _Effect(mc, mt, (), (), reason)
    return _Effect(mc, mt, ((treatment.variance / nt, nt),), ((control.variance / nc, nc),), None)


def _degenerate(too_small: str | None, mc: float, mt: float, undefined: str) -> str | None:
    """Why an effect cannot be estimated (None when it can): too few units, then NaN means."""
    if too_small is not None:
        return too_small
    if math.isnan(mc) or math.isnan(mt):
        return f"{undefined} (zero denominator sum)"
    return None


def relative_se(mc: float, mt: float, var_c: float, var_t: float) -> float:
    """Delta-method standard error of m_t / m_c − 1 from the variances of the two means."""
    return math.sqrt(var_t / mc**2 + var_c * mt**2 / mc**4)


def fieller_interval(
    mc: float, mt: float, var_c: float, var_t: float, q: float
) -> tuple[float, float]:
    """Fieller's interval for the ratio m_t / m_c of two independent means.

    The set of θ with ``(m_t − θ m_c)² ≤ q² (Var(m_t) + θ² Var(m_c))``. At θ = 1 this is exactly
    the test of the difference, so the interval excludes 1 if and only if that test rejects.
    When the control mean is not distinguishable from 0 (``m_c² ≤ q² Var(m_c)``) the set is
    unbounded and ``(−inf, inf)`` is returned.

    Args:
        mc, mt: Control and treatment means.
        var_c, var_t: Variances of those means.
        q: Critical value (t or z) of the test.

    Returns:
        ``(low, high)`` bounds of the ratio (not yet minus 1).
    """
    a = mc * mc - q * q * var_c
    b = mt * mc
    c = mt * mt - q * q * var_t
    if a <= 0:
        return -math.inf, math.inf
    root = math.sqrt(max(b * b - a * c, 0.0))
    return (b - root) / a, (b + root) / a


def _welch_df(components: Sequence[tuple[float, int]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of variance components."""
    total = sum(c for c, _ in components)
    denom = sum(c * c / (n - 1) for c, n in components)
    return total * total / denom if denom > 0 else NAN


def sequential_half_width(se: float, n_total: int, alpha: float, tuning: float) -> float:
    """Half-width of the Waudby-Smith et al. (2023) asymptotic confidence sequence.

    Args:
        se: Standard error of the effect estimate.
        n_total: Units in both arms, N = n_c + n_t.
        alpha: Error rate of the sequence (0 < alpha < 1).
        tuning: N*, the sample size at which the sequence is tightest.

    Returns:
        ``se·√N·√(2(Nρ² + 1)/(N²ρ²)·ln(√(Nρ² + 1)/α))``.
    """
    log_term = -2.0 * math.log(alpha)
    rho2 = (log_term + math.log(log_term + 1.0)) / tuning
    nr = n_total * rho2
    width2 = 2.0 * (nr + 1.0) / (n_total**2 * rho2) * math.log(math.sqrt(nr + 1.0) / alpha)
    return se * math.sqrt(n_total) * math.sqrt(width2)


def sequential_p_value(
    estimate: float, se: float, n_total: int, tuning: float, alternative: str = "two-sided"
) -> float:
    """Always-valid p-value: the smallest alpha at which the confidence sequence excludes 0.

    Solved with `scipy.optimize.brentq` on ln α (the half-width falls as α grows). When even
    α → 1 does not exclude 0 the p-value is 1; below the smallest float it is clamped there.
    """
    if (alternative == "greater" and estimate <= 0) or (alternative == "less" and estimate >= 0):
        return 1.0
    if se == 0:
        return NAN if estimate == 0 else 0.0
    target = abs(estimate)

    def excess(log_alpha: float) -> float:
        return sequential_half_width(se, n_total, math.exp(log_alpha), tuning) - target

    lo, hi = -744.0, math.log1p(-1e-12)
    if excess(hi) >= 0:
        return 1.0
    if excess(lo) <= 0:
        return float(np.nextafter(0.0, 1.0))
    return math.exp(optimize.brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12))


def _interval(estimate: float, half: float, alternative: str) -> tuple[float, float]:
    if alternative == "greater":
        return estimate - half, math.inf
    if alternative == "less":
        return -math.inf, estimate + half
    return estimate - half, estimate + half


def _test_effect(
    effect: _Effect,
    *,
    n_total: int,
    relative: bool,
    alpha: float,
    alternative: str,
    sequential: bool,
    sequential_tuning: float,
    method: str,
    normal: bool = False,
) -> FrequentistResult:
    """Test the difference of means; report it or the relative lift with a matching interval.

    The p-value always tests m_t − m_c (Welch t, or z when `normal`), whatever `relative` says.
    A relative interval is Fieller's (see `fieller_interval`) with the test's own critical value,
    so it excludes 0 exactly when the test rejects; its lower bound is never below −100 % (a mean
    of non-negative outcomes cannot fall below zero). The relative lift needs a positive control
    mean; otherwise it is NaN with a reason while the test and ``absolute_effect`` stand.
    """
    mc, mt = effect.control_mean, effect.treatment_mean
    absolute = mt - mc

    def result(est: float, lo: float, hi: float, se: float, p: float, df: float, why: str | None):
        return FrequentistResult(
            est, lo, hi, se, p, df, absolute, mc, mt,
            relative, alternative, alpha, sequential, method, why,
        )  # fmt: skip

    if effect.reason is not None:
        return result(NAN, NAN, NAN, NAN, NAN, NAN, effect.reason)
    var_t, var_c = effect.var_treatment, effect.var_control
    se = math.sqrt(var_t + var_c)
    df = math.inf if normal else _welch_df(effect.components)
    if not se > 0:
        return result(NAN, NAN, NAN, se, NAN, df, "both arms have zero variance")
    tail = alpha / 2 if alternative == "two-sided" else alpha
    q = float(sps.norm.isf(tail)) if normal else float(sps.t.isf(tail, df))
    if sequential:
        p = sequential_p_value(absolute, se, n_total, sequential_tuning, alternative)
    elif normal:
        p = _z_p_value(absolute / se, alternative)
    else:
        p = _t_p_value(absolute / se, df, alternative)
    if not relative:
        half = sequential_half_width(se, n_total, alpha, sequential_tuning) if sequential else q * se
        lo, hi = _interval(absolute, half, alternative)
        return result(absolute, lo, hi, se, p, df, None)
    if not mc > 0:
        why = _ZERO_CONTROL if mc == 0 else "control mean is negative: relative effect undefined"
        return result(NAN, NAN, NAN, NAN, p, df, why + " (see absolute_effect)")
    est = mt / mc - 1.0
    se_rel = relative_se(mc, mt, var_c, var_t)
    if sequential:  # the sequence's half-width is se times this critical value
        q = sequential_half_width(1.0, n_total, alpha, sequential_tuning)
    low, high = fieller_interval(mc, mt, var_c, var_t, q)
    lo, hi = _interval_bounds(low - 1.0, high - 1.0, alternative)
    return result(est, max(lo, -1.0), hi, se_rel, p, df, None)


def _interval_bounds(lo: float, hi: float, alternative: str) -> tuple[float, float]:
    if alternative == "greater":
        return lo, math.inf
    if alternative == "less":
        return -math.inf, hi
    return lo, hi


def _z_p_value(z: float, alternative: str) -> float:
    """Normal p-value from survival functions."""
    if alternative == "greater":
        return float(sps.norm.sf(z))
    if alternative == "less":
        return float(sps.norm.sf(-z))
    return float(min(1.0, 2.0 * sps.norm.sf(abs(z))))


def _t_p_value(t_stat: float, df: float, alternative: str) -> float:
    """Student-t p-value from survival functions, so tiny p-values stay positive."""
    if alternative == "greater":
        return float(sps.t.sf(t_stat, df))
    if alternative == "less":
        return float(sps.t.sf(-t_stat, df))
    return float(min(1.0, 2.0 * sps.t.sf(abs(t_stat), df)))


def _check_test_options(alpha: float, alternative: str, sequential_tuning: float) -> None:
    _check_alpha(alpha)
    _check_alternative(alternative)
    if not sequential_tuning > 0:
        raise ConfigurationError(
            f"sequential_tuning must be a positive sample size (e.g. 5000), got {sequential_tuning}"
        )


def frequentist_test(
    control: Stats,
    treatment: Stats,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    sequential: bool = False,
    sequential_tuning: float = 5000,
) -> FrequentistResult:
    """Welch t-test (or always-valid confidence sequence) of treatment against control.

    Args:
        control: Control arm statistics (`MeanStats`, `ProportionStats` or `RatioStats`).
        treatment: Treatment arm statistics of the same metric.
        relative: Report the relative lift m_t / m_c − 1 (Fieller interval) instead of
            m_t − m_c. The p-value tests the difference of means either way.
        alpha: Error rate; the interval has coverage 1 − alpha.
        alternative: ``two-sided``, ``greater`` (treatment better) or ``less``.
        sequential: Use the always-valid confidence sequence (safe to peek).
        sequential_tuning: N*, the total sample size where the sequence is tightest.

    Returns:
        A `FrequentistResult`; NaNs with a `reason` for degenerate data, never an exception.

    Raises:
        ConfigurationError: alpha, alternative or sequential_tuning is invalid.
    """
    _check_test_options(alpha, alternative, sequential_tuning)
    method = "sequential-cs" if sequential else "welch-t"
    return _test_effect(
        _effect(control, treatment),
        n_total=control.n + treatment.n,
        relative=relative,
        alpha=alpha,
        alternative=alternative,
        sequential=sequential,
        sequential_tuning=sequential_tuning,
        method=method,
    )


# --------------------------------------------------------------------------- Bayesian


def gaussian_expected_loss(mean: float, sd: float) -> tuple[float, float]:
    """Closed-form ``(E[max(X, 0)], E[max(−X, 0)])`` for X ~ N(mean, sd²)."""
    if sd == 0:
        return max(mean, 0.0), max(-mean, 0.0)
    z = mean / sd
    density = sd * float(sps.norm.pdf(z))
    return (
        mean * float(sps.norm.cdf(z)) + density,
        -mean * float(sps.norm.cdf(-z)) + density,
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
    z = float(sps.norm.isf((1.0 - credible_level) / 2))
    return BayesianResult(
        estimate=mean,
        ci_low=mean - z * sd,
        ci_high=mean + z * sd,
        sd=sd,
        chance_to_win=float(sps.norm.sf(0.0, loc=mean, scale=sd)),
        risk=gaussian_expected_loss(mean, sd),
        absolute_effect=absolute,
        relative=relative,
    )


# --------------------------------------------------------------------------- variance reduction


def _centered(sum_a: float, sum_b: float, sum_ab: float, n: int) -> float:
    """Σ(a − ā)(b − b̄) from raw sums."""
    return sum_ab - sum_a * sum_b / n if n > 0 else 0.0


def cuped(control: CupedStats, treatment: CupedStats) -> CupedResult:
    """CUPED adjustment from sufficient statistics (so SQL aggregates can feed it).

    θ is pooled over the two arms: ``θ = Σ_arms Sxy / Σ_arms Sxx`` with within-arm centred sums,
    and each unit's metric becomes ``y − θ(x − x̄)`` with x̄ the mean of x over both arms. The
    returned `MeanStats` hold the adjusted sums, so `frequentist_test` applies unchanged.

    Args:
        control: Control arm `CupedStats`.
        treatment: Treatment arm `CupedStats`.

    Returns:
        A `CupedResult`; θ is 0 (no adjustment) when x has no within-arm variance.
    """
    arms = (control, treatment)
    sxx = sum(_centered(a.sum_x, a.sum_x, a.sum_x2, a.n) for a in arms)
    sxy = sum(_centered(a.sum_x, a.sum_y, a.sum_xy, a.n) for a in arms)
    theta = sxy / sxx if sxx > 0 else 0.0
    n_all = control.n + treatment.n
    x_bar = (control.sum_x + treatment.sum_x) / n_all if n_all > 0 else 0.0

    def adjust(a: CupedStats) -> MeanStats:
        # Σ(y − θ(x − x̄)) and Σ(y − θ(x − x̄))², expanded into the raw sums.
        sum_dx = a.sum_x - a.n * x_bar
        sum_dx2 = a.sum_x2 - 2 * x_bar * a.sum_x + a.n * x_bar**2
        sum_y_dx = a.sum_xy - x_bar * a.sum_y
        return MeanStats(
            a.n,
            a.sum_y - theta * sum_dx,
            a.sum_y2 - 2 * theta * sum_y_dx + theta**2 * sum_dx2,
        )

    return CupedResult(adjust(control), adjust(treatment), theta)


def cuped_adjust(
    y_control: Sequence[float] | np.ndarray,
    x_control: Sequence[float] | np.ndarray,
    y_treatment: Sequence[float] | np.ndarray,
    x_treatment: Sequence[float] | np.ndarray,
) -> CupedResult:
    """CUPED on per-unit arrays: metric y and pre-period covariate x for each arm.

    Returns:
        A `CupedResult` (adjusted control and treatment `MeanStats`, and θ).
    """
    return cuped(
        CupedStats.from_arrays(y_control, x_control),
        CupedStats.from_arrays(y_treatment, x_treatment),
    )


def post_stratify(
    strata_control: Sequence[Stats],
    strata_treatment: Sequence[Stats],
    weights: Sequence[float],
    *,
    relative: bool = True,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    sequential: bool = False,
    sequential_tuning: float = 5000,
) -> FrequentistResult:
    """Combine per-stratum (segment) arm statistics with stratum weights.

    Arm means are ``M = Σ w_k m_k`` with weights normalised to sum to 1, and
    ``Var(M) = Σ w_k² v_k / n_k``; the relative effect uses the same delta method as
    `frequentist_test` on these combined means. Degrees of freedom are Welch–Satterthwaite over
    all stratum × arm components.

    Args:
        strata_control: Control statistics per stratum.
        strata_treatment: Treatment statistics per stratum, same order.
        weights: Stratum weights (e.g. population shares); normalised here.
        relative, alpha, alternative, sequential, sequential_tuning: As in `frequentist_test`.

    Returns:
        A `FrequentistResult` with ``method="post-stratified"``.

    Raises:
        ModelError: Lengths differ or weights are negative or all zero.
        ConfigurationError: An option is invalid.
    """
    _check_test_options(alpha, alternative, sequential_tuning)
    if not len(strata_control) == len(strata_treatment) == len(weights) > 0:
        raise ModelError(
            "post_stratify needs one control stats, one treatment stats and one weight per "
            f"stratum, got {len(strata_control)}, {len(strata_treatment)} and {len(weights)}"
        )
    w = np.asarray(weights, dtype=float)
    if (w < 0).any() or not w.sum() > 0:
        raise ModelError(
            f"post_stratify weights must be non-negative with a positive sum: {weights}"
        )
    w = w / w.sum()
    return _test_effect(
        _stratified_effect(strata_control, strata_treatment, w),
        n_total=sum(s.n for s in strata_control) + sum(s.n for s in strata_treatment),
        relative=relative,
        alpha=alpha,
        alternative=alternative,
        sequential=sequential,
        sequential_tuning=sequential_tuning,
        method="post-stratified",
    )


def _stratified_effect(
    control: Sequence[Stats], treatment: Sequence[Stats], w: np.ndarray
) -> _Effect:
    kept = [(c, t, wk) for c, t, wk in zip(control, treatment, w, strict=True) if wk > 0]
    mc = sum(wk * c.mean for c, _, wk in kept)
    mt = sum(wk * t.mean for _, t, wk in kept)
    small = any(c.n < 2 or t.n < 2 for c, t, _ in kept)
    too_small = "need at least 2 units per arm in every weighted stratum" if small else None
    reason = _degenerate(too_small, mc, mt, "a stratum mean is undefined")
    if reason is not None:
        return _Effect(mc, mt, (), (), reason)
    comps_t = tuple((wk**2 * t.variance / t.n, t.n) for _, t, wk in kept)
    comps_c = tuple((wk**2 * c.variance / c.n, c.n) for c, _, wk in kept)
    return _Effect(mc, mt, comps_t, comps_c, None)


# --------------------------------------------------------------------------- small samples


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion ((NaN, NaN) when n = 0)."""
    _check_alpha(alpha)
    if n <= 0:
        return NAN, NAN
    z = float(sps.norm.isf(alpha / 2))
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def _newcombe(c: ProportionStats, t: ProportionStats, alpha: float) -> tuple[float, float]:
    """Newcombe hybrid score interval for p_t − p_c from Wilson intervals."""
    pc, pt = c.mean, t.mean
    (lc, uc), (lt, ut) = (wilson_interval(a.successes, a.n, alpha) for a in (c, t))
    d = pt - pc
    return (
        d - math.sqrt((pt - lt) ** 2 + (uc - pc) ** 2),
        d + math.sqrt((ut - pt) ** 2 + (pc - lc) ** 2),
    )


def _mover_ratio(c: ProportionStats, t: ProportionStats, alpha: float) -> tuple[float, float]:
    """MOVER-R interval (Donner & Zou 2012) for p_t / p_c − 1 from Wilson intervals.

    Each limit is a root of ``(p_t − θ p_c)² = (p_t − w_t)² + θ²(w_c − p_c)²`` (w the Wilson
    limits); the lower one in the stable form ``C / (B + √(B² − AC))``, which stays valid when
    the leading coefficient A is zero or negative. No upper root means an unbounded interval.
    """
    pc, pt = c.mean, t.mean
    (lc, uc), (lt, ut) = (wilson_interval(a.successes, a.n, alpha) for a in (c, t))
    b = pt * pc
    a_low, c_low = uc * (2 * pc - uc), lt * (2 * pt - lt)
    root = b + math.sqrt(max(b * b - a_low * c_low, 0.0))
    low = c_low / root if root > 0 else 0.0
    a_high, c_high = lc * (2 * pc - lc), ut * (2 * pt - ut)
    disc = b * b - a_high * c_high
    high = (b + math.sqrt(disc)) / a_high if a_high > 0 and disc >= 0 else math.inf
    return low - 1.0, high - 1.0


def proportion_test(
    control: ProportionStats,
    treatment: ProportionStats,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    min_expected: float = FISHER_MIN_EXPECTED,
) -> FrequentistResult:
    """Compare two proportions, using Fisher's exact test when counts are small.

    When any expected cell of the 2×2 table (successes/failures × arm) is below `min_expected`,
    the p-value comes from `scipy.stats.fisher_exact` and the interval from Wilson scores
    (Newcombe for the difference, MOVER-R for the relative lift); ``method`` is
    ``fisher-exact``. Otherwise it is the two-proportion z test of p_t − p_c with the unpooled
    variance ``p(1 − p)/n`` per arm (``method="z-test"``); the relative interval is Fieller's
    with the same z, so it agrees with the test.

    Args:
        control: Control `ProportionStats`.
        treatment: Treatment `ProportionStats`.
        relative: Report the relative lift instead of the difference.
        alpha: Error rate.
        alternative: ``two-sided``, ``greater`` (treatment rate higher) or ``less``.
        min_expected: Expected-count threshold below which Fisher is used.

    Returns:
        A `FrequentistResult`.
    """
    _check_test_options(alpha, alternative, 1.0)
    if not _needs_exact(control, treatment, min_expected):
        return _test_effect(
            _effect(control, treatment),
            n_total=control.n + treatment.n,
            relative=relative,
            alpha=alpha,
            alternative=alternative,
            sequential=False,
            sequential_tuning=1.0,
            method="z-test",
            normal=True,
        )
    welch = frequentist_test(control, treatment, relative=relative, alpha=alpha)
    absolute = treatment.mean - control.mean if control.n and treatment.n else NAN
    base = {
        "absolute_effect": absolute,
        "control_mean": control.mean,
        "treatment_mean": treatment.mean,
        "relative": relative,
        "alternative": alternative,
        "alpha": alpha,
        "sequential": False,
        "method": "fisher-exact",
    }
    if control.n == 0 or treatment.n == 0:
        return FrequentistResult(NAN, NAN, NAN, NAN, NAN, NAN, **base, reason="an arm is empty")
    table = [
        [treatment.successes, treatment.n - treatment.successes],
        [control.successes, control.n - control.successes],
    ]
    p_value = float(sps.fisher_exact(table, alternative=alternative).pvalue)
    level = alpha if alternative == "two-sided" else 2 * alpha
    if relative and control.successes == 0:
        return FrequentistResult(NAN, NAN, NAN, NAN, p_value, NAN, **base, reason=_ZERO_CONTROL)
    if relative:
        estimate = treatment.mean / control.mean - 1.0
        lo, hi = _mover_ratio(control, treatment, level)
    else:
        estimate = absolute
        lo, hi = _newcombe(control, treatment, level)
    if alternative == "greater":
        hi = math.inf
    elif alternative == "less":
        lo = -math.inf
    return FrequentistResult(estimate, lo, hi, welch.se, p_value, welch.df, **base)


def _needs_exact(c: ProportionStats, t: ProportionStats, min_expected: float) -> bool:
    """Whether any expected cell count of the 2×2 table is below `min_expected`."""
    n = c.n + t.n
    if n == 0:
        return True
    successes = c.successes + t.successes
    expected = [arm.n * k / n for arm in (c, t) for k in (successes, n - successes)]
    return min(expected) < min_expected


# --------------------------------------------------------------------------- checks and corrections


def srm_pvalue(observed_counts: Sequence[int], expected_weights: Sequence[float]) -> float:
    """Sample ratio mismatch: chi-square goodness-of-fit p-value of arm sizes.

    Warn when the result is below `SRM_ALPHA`. Arms with zero weight and zero units are ignored;
    units in a zero-weight arm give p = 0.

    Args:
        observed_counts: Units assigned per arm.
        expected_weights: Planned allocation per arm (any positive scale, e.g. ``[1, 1, 1]``).

    Returns:
        The p-value, or NaN when no units were assigned or fewer than two arms remain.

    Raises:
        ModelError: Lengths differ, or counts or weights are negative.
    """
    obs = np.asarray(observed_counts, dtype=float)
    w = np.asarray(expected_weights, dtype=float)
    if obs.shape != w.shape or (obs < 0).any() or (w < 0).any():
        raise ModelError(
            "srm_pvalue needs one non-negative weight per non-negative arm count, got counts "
            f"{list(observed_counts)} and weights {list(expected_weights)}"
        )
    if (obs[w == 0] > 0).any():
        return 0.0
    obs, w = obs[w > 0], w[w > 0]
    if obs.sum() == 0 or obs.size < 2:
        return NAN
    expected = w / w.sum() * obs.sum()
    return float(sps.chisquare(obs, expected).pvalue)


def adjust_pvalues(pvalues: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Multiple-comparison adjusted p-values (Holm step-down or Benjamini–Hochberg).

    None and NaN entries pass through unchanged and do not count towards the family size.

    Args:
        pvalues: Raw p-values, in any order.
        method: ``holm`` (family-wise error) or ``bh`` (false discovery rate).

    Returns:
        Adjusted p-values in the input order, capped at 1.

    Raises:
        ConfigurationError: Unknown method.
    """
    if method not in ("holm", "bh"):
        raise ConfigurationError(
            f"p-value adjustment method must be 'holm' or 'bh', got {method!r}"
        )
    valid = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    out: list[float | None] = list(pvalues)
    m = len(valid)
    if m == 0:
        return out
    order = sorted(valid, key=lambda i: pvalues[i])  # type: ignore[arg-type, return-value]
    ps = np.array([pvalues[i] for i in order], dtype=float)
    ranks = np.arange(1, m + 1)
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - ranks + 1) * ps))
    else:
        adjusted = np.minimum.accumulate(np.minimum(1.0, m / ranks * ps)[::-1])[::-1]
    for i, value in zip(order, adjusted, strict=True):
        out[i] = float(value)
    return out


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
    z_a = float(sps.norm.isf(alpha / 2))
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
    root = null + float(sps.norm.ppf(power)) * s1
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
    return float(sps.norm.cdf(z_b))


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
    return float(optimize.brentq(gap, 1e-12, hi, xtol=1e-15, rtol=1e-12))

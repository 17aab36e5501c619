"""Frequentist tests of the difference of means: Welch t, z for proportions, Fisher's exact test
for small counts, Fieller's relative interval, always-valid confidence sequences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cpo.errors import ConfigurationError
from cpo.experiments.stats.distributions import norm_isf, norm_sf, t_isf, t_sf
from cpo.experiments.stats.sufficient import (
    _ZERO_CONTROL,
    NAN,
    ProportionStats,
    Stats,
    _check_alpha,
    _check_alternative,
)

FISHER_MIN_EXPECTED = 5.0
"""`proportion_test` switches to Fisher's exact test below this expected cell count."""


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
    from scipy import optimize

    return math.exp(optimize.brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12))


@dataclass(frozen=True)
class TestOptions:
    """The options every frequentist comparison takes (see `frequentist_test`), validated."""

    relative: bool = True
    alpha: float = 0.05
    alternative: str = "two-sided"
    sequential: bool = False
    sequential_tuning: float = 5000

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)
        _check_alternative(self.alternative)
        if not self.sequential_tuning > 0:
            raise ConfigurationError(
                "sequential_tuning must be a positive sample size (e.g. 5000), got "
                f"{self.sequential_tuning}"
            )


def _test_effect(
    effect: _Effect, n_total: int, options: TestOptions, method: str, *, normal: bool = False
) -> FrequentistResult:
    """Test the difference of means; report it or the relative lift with a matching interval.

    The p-value always tests m_t − m_c (Welch t, or z when `normal`), whatever `relative` says.
    A relative interval is Fieller's (see `fieller_interval`) with the test's own critical value,
    so it excludes 0 exactly when the test rejects; its lower bound is never below −100 % (a mean
    of non-negative outcomes cannot fall below zero). The relative lift needs a positive control
    mean; otherwise it is NaN with a reason while the test and ``absolute_effect`` stand.
    """
    relative, alpha, alternative = options.relative, options.alpha, options.alternative
    sequential, sequential_tuning = options.sequential, options.sequential_tuning
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
    q = norm_isf(tail) if normal else t_isf(tail, df)
    if sequential:
        p = sequential_p_value(absolute, se, n_total, sequential_tuning, alternative)
    else:
        p = tail_p_value(absolute / se, alternative, df)
    if not relative:
        half = (
            sequential_half_width(se, n_total, alpha, sequential_tuning) if sequential else q * se
        )
        lo, hi = one_sided(absolute - half, absolute + half, alternative)
        return result(absolute, lo, hi, se, p, df, None)
    if not mc > 0:
        why = _ZERO_CONTROL if mc == 0 else "control mean is negative: relative effect undefined"
        return result(NAN, NAN, NAN, NAN, p, df, why + " (see absolute_effect)")
    est = mt / mc - 1.0
    se_rel = relative_se(mc, mt, var_c, var_t)
    if sequential:  # the sequence's half-width is se times this critical value
        q = sequential_half_width(1.0, n_total, alpha, sequential_tuning)
    low, high = fieller_interval(mc, mt, var_c, var_t, q)
    lo, hi = one_sided(low - 1.0, high - 1.0, alternative)
    return result(est, max(lo, -1.0), hi, se_rel, p, df, None)


def one_sided(lo: float, hi: float, alternative: str) -> tuple[float, float]:
    """The interval for `alternative`: a one-sided test leaves the other side unbounded."""
    if alternative == "greater":
        return lo, math.inf
    if alternative == "less":
        return -math.inf, hi
    return lo, hi


def tail_p_value(statistic: float, alternative: str, df: float = math.inf) -> float:
    """p-value of a z (``df`` infinite) or Student-t statistic, from survival functions so tiny
    p-values stay positive."""

    def sf(x: float) -> float:
        return norm_sf(x) if math.isinf(df) else t_sf(x, df)

    if alternative == "greater":
        return sf(statistic)
    if alternative == "less":
        return sf(-statistic)
    return min(1.0, 2.0 * sf(abs(statistic)))


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
    options = TestOptions(relative, alpha, alternative, sequential, sequential_tuning)
    method = "sequential-cs" if sequential else "welch-t"
    return _test_effect(_effect(control, treatment), control.n + treatment.n, options, method)


# --------------------------------------------------------------------------- small samples


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion ((NaN, NaN) when n = 0)."""
    _check_alpha(alpha)
    if n <= 0:
        return NAN, NAN
    z = norm_isf(alpha / 2)
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
    options = TestOptions(relative, alpha, alternative, sequential=False, sequential_tuning=1.0)
    if not _needs_exact(control, treatment, min_expected):
        n_total = control.n + treatment.n
        return _test_effect(_effect(control, treatment), n_total, options, "z-test", normal=True)
    welch = frequentist_test(control, treatment, relative=relative, alpha=alpha)
    absolute = treatment.mean - control.mean if control.n and treatment.n else NAN

    def fisher(
        est: float, lo: float, hi: float, se: float, p: float, df: float, why: str | None = None
    ) -> FrequentistResult:
        return FrequentistResult(
            est, lo, hi, se, p, df, absolute, control.mean, treatment.mean,
            relative, alternative, alpha, False, "fisher-exact", why,
        )  # fmt: skip

    if control.n == 0 or treatment.n == 0:
        return fisher(NAN, NAN, NAN, NAN, NAN, NAN, "an arm is empty")
    table = [
        [treatment.successes, treatment.n - treatment.successes],
        [control.successes, control.n - control.successes],
    ]
    from scipy import stats as sps

    p_value = float(sps.fisher_exact(table, alternative=alternative).pvalue)
    level = alpha if alternative == "two-sided" else 2 * alpha
    if relative and control.successes == 0:
        return fisher(NAN, NAN, NAN, NAN, p_value, NAN, _ZERO_CONTROL)
    if relative:
        estimate = treatment.mean / control.mean - 1.0
        lo, hi = _mover_ratio(control, treatment, level)
    else:
        estimate = absolute
        lo, hi = _newcombe(control, treatment, level)
    lo, hi = one_sided(lo, hi, alternative)
    return fisher(estimate, lo, hi, welch.se, p_value, welch.df)


def _needs_exact(c: ProportionStats, t: ProportionStats, min_expected: float) -> bool:
    """Whether any expected cell count of the 2×2 table is below `min_expected`."""
    n = c.n + t.n
    if n == 0:
        return True
    successes = c.successes + t.successes
    expected = [arm.n * k / n for arm in (c, t) for k in (successes, n - successes)]
    return min(expected) < min_expected

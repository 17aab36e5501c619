"""Experiment statistics: pure, deterministic functions on sufficient statistics (no I/O).

One module per concern, everything re-exported here: `sufficient` (per-arm statistics),
`frequentist` (tests, intervals, sequences, small samples), `bayesian`, `cuped` (CUPED,
post-stratification), `multiplicity` (SRM, Holm/BH) and `planning` (sample size, power, MDE).

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

from cpo.experiments.stats.bayesian import BayesianResult, bayesian_test, gaussian_expected_loss
from cpo.experiments.stats.cuped import CupedResult, CupedStats, cuped, cuped_adjust, post_stratify
from cpo.experiments.stats.frequentist import (
    FISHER_MIN_EXPECTED,
    FrequentistResult,
    fieller_interval,
    frequentist_test,
    proportion_test,
    relative_se,
    sequential_half_width,
    sequential_p_value,
    wilson_interval,
)
from cpo.experiments.stats.multiplicity import SRM_ALPHA, adjust_pvalues, srm_pvalue
from cpo.experiments.stats.planning import mde, power, sample_size_per_arm
from cpo.experiments.stats.sufficient import (
    ALTERNATIVES,
    MeanStats,
    ProportionStats,
    RatioStats,
    Stats,
    ratio_stats,
)

__all__ = [
    "ALTERNATIVES",
    "FISHER_MIN_EXPECTED",
    "SRM_ALPHA",
    "BayesianResult",
    "CupedResult",
    "CupedStats",
    "FrequentistResult",
    "MeanStats",
    "ProportionStats",
    "RatioStats",
    "Stats",
    "adjust_pvalues",
    "bayesian_test",
    "cuped",
    "cuped_adjust",
    "fieller_interval",
    "frequentist_test",
    "gaussian_expected_loss",
    "mde",
    "post_stratify",
    "power",
    "proportion_test",
    "ratio_stats",
    "relative_se",
    "sample_size_per_arm",
    "sequential_half_width",
    "sequential_p_value",
    "srm_pvalue",
    "wilson_interval",
]

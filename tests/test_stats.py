"""Hand-checked values for cpo.experiments.stats: every convention in the module docstring is
asserted here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from cpo.errors import ConfigurationError, ModelError
from cpo.experiments.stats import (
    SRM_ALPHA,
    CupedStats,
    MeanStats,
    ProportionStats,
    adjust_pvalues,
    bayesian_test,
    cuped,
    cuped_adjust,
    frequentist_test,
    gaussian_expected_loss,
    mde,
    post_stratify,
    power,
    proportion_test,
    ratio_stats,
    sample_size_per_arm,
    sequential_half_width,
    sequential_p_value,
    srm_pvalue,
    wilson_interval,
)

Z975 = 1.959963984540054  # norm.ppf(0.975)
Z80 = 0.8416212335729143  # norm.ppf(0.8)


@pytest.fixture
def samples() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(10.0, 2.0, 40), rng.normal(11.0, 3.0, 55)


# --------------------------------------------------------------------------- sufficient statistics


def test_mean_stats_uses_sample_variance() -> None:
    s = MeanStats.from_values([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.sum, s.sum_squares) == (4, 10.0, 30.0)
    assert s.mean == 2.5
    assert s.variance == pytest.approx(5.0 / 3.0)  # Σ(x − 2.5)² = 5, divided by n − 1 = 3
    assert math.isnan(MeanStats(1, 3.0, 9.0).variance)


def test_proportion_variance_is_p_times_one_minus_p() -> None:
    s = ProportionStats(200, 50)
    assert s.mean == 0.25
    assert s.variance == pytest.approx(0.25 * 0.75)


def test_ratio_variance_is_delta_method_with_covariance() -> None:
    rng = np.random.default_rng(3)
    den = rng.poisson(5, 300).astype(float) + 1
    num = rng.binomial(den.astype(int), 0.3).astype(float)
    s = ratio_stats(num, den)
    r = num.sum() / den.sum()
    assert s.mean == pytest.approx(r)
    # Independent check: the linearised residual (num − R·den)/mean(den) has that variance.
    residual = (num - r * den) / den.mean()
    assert s.variance == pytest.approx(np.var(residual, ddof=1), rel=1e-9)
    # Ignoring the positive covariance would overstate the variance a lot.
    var_no_cov = (
        np.var(num, ddof=1) / den.mean() ** 2 + r**2 * np.var(den, ddof=1) / den.mean() ** 2
    )
    assert s.variance < 0.8 * var_no_cov


def test_invalid_data_raises_model_error() -> None:
    with pytest.raises(ModelError, match="successes must be between 0 and n=3"):
        ProportionStats(3, 5)
    with pytest.raises(ModelError, match="non-negative count"):
        MeanStats(-1, 0.0, 0.0)
    with pytest.raises(ModelError, match="one denominator per numerator"):
        ratio_stats([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- frequentist


def test_absolute_welch_matches_scipy(samples: tuple[np.ndarray, np.ndarray]) -> None:
    c, t = samples
    res = frequentist_test(MeanStats.from_values(c), MeanStats.from_values(t), relative=False)
    ref = sps.ttest_ind(t, c, equal_var=False)
    ref_ci = ref.confidence_interval(0.95)
    assert res.estimate == pytest.approx(t.mean() - c.mean())
    assert res.se == pytest.approx(math.sqrt(t.var(ddof=1) / 55 + c.var(ddof=1) / 40))
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.df == pytest.approx(ref.df, rel=1e-9)
    assert (res.ci_low, res.ci_high) == pytest.approx((ref_ci.low, ref_ci.high), rel=1e-9)
    assert res.method == "welch-t" and res.reason is None


def test_welch_df_hand_computed() -> None:
    c, t = MeanStats(10, 50.0, 290.0), MeanStats(20, 140.0, 1100.0)
    # control: mean 5, var (290 − 250)/9; treatment: mean 7, var (1100 − 980)/19
    sc, st = (40 / 9) / 10, (120 / 19) / 20
    df = (sc + st) ** 2 / (sc**2 / 9 + st**2 / 19)
    res = frequentist_test(c, t, relative=False)
    assert res.df == pytest.approx(df)
    assert res.estimate == 2.0
    assert res.p_value == pytest.approx(2 * sps.t.sf(2.0 / math.sqrt(sc + st), df))


def test_relative_effect_tests_the_difference_with_a_fieller_interval(
    samples: tuple[np.ndarray, np.ndarray],
) -> None:
    c, t = samples
    res = frequentist_test(MeanStats.from_values(c), MeanStats.from_values(t))
    mc, mt, vc, vt = c.mean(), t.mean(), c.var(ddof=1) / 40, t.var(ddof=1) / 55
    welch = sps.ttest_ind(t, c, equal_var=False)
    # The p-value and df are Welch's on the difference of means, whatever the reported scale.
    assert res.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    assert res.df == pytest.approx(welch.df, rel=1e-9)
    assert res.estimate == pytest.approx(mt / mc - 1)
    assert res.se == pytest.approx(math.sqrt(vt / mc**2 + vc * mt**2 / mc**4))
    # Fieller: the bounds solve (mt - r mc)^2 = q^2 (vt + r^2 vc) for r = 1 + bound.
    q = sps.t.isf(0.025, welch.df)
    for bound in (res.ci_low, res.ci_high):
        r = 1 + bound
        assert (mt - r * mc) ** 2 == pytest.approx(q * q * (vt + r * r * vc), rel=1e-9)
    assert res.absolute_effect == pytest.approx(mt - mc)


def test_relative_effect_needs_a_positive_control_mean() -> None:
    c, t = MeanStats(4, -8.0, 20.0), MeanStats(4, -4.0, 6.0)
    res = frequentist_test(c, t)
    assert math.isnan(res.estimate) and "negative" in (res.reason or "")
    assert res.p_value == frequentist_test(c, t, relative=False).p_value


def test_tiny_p_value_does_not_underflow() -> None:
    c = ProportionStats(100_000, 10_000)
    t = ProportionStats(100_000, 12_500)
    res = frequentist_test(c, t, relative=False)
    assert 0.0 < res.p_value < 1e-60
    assert 2 * (1 - sps.t.cdf(abs(res.estimate / res.se), res.df)) == 0.0  # naive way underflows


def test_one_sided_alternatives() -> None:
    c, t = ProportionStats(1000, 100), ProportionStats(1000, 125)
    two = frequentist_test(c, t, relative=False)
    greater = frequentist_test(c, t, relative=False, alternative="greater")
    less = frequentist_test(c, t, relative=False, alternative="less")
    assert greater.p_value == pytest.approx(two.p_value / 2)
    assert less.p_value == pytest.approx(1 - two.p_value / 2)
    assert greater.ci_high == math.inf and less.ci_low == -math.inf
    assert greater.ci_low == pytest.approx(greater.estimate - sps.t.ppf(0.95, two.df) * two.se)


def test_zero_baseline_reports_reason_and_absolute_effect() -> None:
    c, t = MeanStats(10, 0.0, 0.0), MeanStats(10, 5.0, 5.0)
    rel = frequentist_test(c, t)
    assert math.isnan(rel.estimate)
    assert rel.reason is not None and "control mean is zero" in rel.reason
    assert rel.absolute_effect == 0.5
    absolute = frequentist_test(c, t, relative=False)
    assert absolute.estimate == 0.5 and absolute.p_value < 0.05
    # The test of the difference still stands when the relative lift is undefined.
    assert rel.p_value == absolute.p_value
    bayes = bayesian_test(c, t)
    assert math.isnan(bayes.chance_to_win) and "zero" in (bayes.reason or "")


def test_fewer_than_two_units_gives_nans_not_errors() -> None:
    res = frequentist_test(MeanStats(1, 3.0, 9.0), MeanStats(5, 10.0, 30.0))
    assert math.isnan(res.estimate) and math.isnan(res.ci_low) and math.isnan(res.se)
    assert "at least 2 units" in (res.reason or "")
    empty = frequentist_test(ProportionStats(0, 0), ProportionStats(0, 0), relative=False)
    assert "at least 2 units" in (empty.reason or "")


def test_zero_variance_gives_reason() -> None:
    res = frequentist_test(ProportionStats(50, 0), ProportionStats(50, 0), relative=False)
    assert math.isnan(res.estimate) and math.isnan(res.p_value)
    assert res.reason == "both arms have zero variance"


def test_invalid_options_raise_configuration_error() -> None:
    c = MeanStats(10, 10.0, 20.0)
    with pytest.raises(ConfigurationError, match="alpha must be strictly between 0 and 1"):
        frequentist_test(c, c, alpha=1.5)
    with pytest.raises(ConfigurationError, match="alternative must be one of"):
        frequentist_test(c, c, alternative="bigger")
    with pytest.raises(ConfigurationError, match="sequential_tuning"):
        frequentist_test(c, c, sequential=True, sequential_tuning=0)


def test_ratio_metric_feeds_frequentist_test() -> None:
    rng = np.random.default_rng(11)
    opens_c, opens_t = rng.poisson(4, 500) + 1, rng.poisson(4, 500) + 1
    clicks_c, clicks_t = rng.binomial(opens_c, 0.2), rng.binomial(opens_t, 0.25)
    res = frequentist_test(ratio_stats(clicks_c, opens_c), ratio_stats(clicks_t, opens_t))
    rc, rt = clicks_c.sum() / opens_c.sum(), clicks_t.sum() / opens_t.sum()
    assert res.estimate == pytest.approx(rt / rc - 1)
    assert res.ci_low < 0.25 < res.ci_high


# --------------------------------------------------------------------------- sequential


def test_sequential_half_width_formula_by_hand() -> None:
    se, n, alpha, tuning = 0.1, 2000, 0.05, 5000
    rho2 = (-2 * math.log(0.05) + math.log(-2 * math.log(0.05) + 1)) / 5000
    width = math.sqrt(2 * (n * rho2 + 1) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / 0.05))
    assert sequential_half_width(se, n, alpha, tuning) == pytest.approx(se * math.sqrt(n) * width)


def test_sequential_interval_is_wider_and_p_value_is_its_inverse() -> None:
    c, t = ProportionStats(3000, 300), ProportionStats(3000, 360)
    fixed = frequentist_test(c, t)
    seq = frequentist_test(c, t, sequential=True)
    assert seq.method == "sequential-cs"
    assert seq.estimate == fixed.estimate and seq.se == fixed.se
    absolute = frequentist_test(c, t, sequential=True, relative=False)
    assert seq.ci_low < fixed.ci_low and seq.ci_high > fixed.ci_high
    assert seq.p_value > fixed.p_value
    # At alpha = p-value the confidence sequence just touches 0.
    half = sequential_half_width(absolute.se, 6000, seq.p_value, 5000)
    assert half == pytest.approx(abs(absolute.estimate), rel=1e-8)
    at_p = frequentist_test(c, t, sequential=True, alpha=seq.p_value)
    assert at_p.ci_low == pytest.approx(0.0, abs=1e-10)


def test_sequential_p_value_edges() -> None:
    assert sequential_p_value(0.0, 1.0, 1000, 5000) == 1.0
    assert sequential_p_value(-1.0, 0.1, 1000, 5000, "greater") == 1.0
    assert 0.0 < sequential_p_value(1000.0, 1.0, 1000, 5000) < 1e-300


# --------------------------------------------------------------------------- Bayesian


def test_bayesian_flat_prior_matches_gaussian_closed_form() -> None:
    c, t = ProportionStats(2000, 200), ProportionStats(2000, 240)
    freq = frequentist_test(c, t, relative=False)
    res = bayesian_test(c, t, relative=False)
    mu, sd = freq.estimate, freq.se
    assert res.estimate == pytest.approx(mu) and res.sd == pytest.approx(sd)
    assert res.ci_low == pytest.approx(mu - Z975 * sd)
    assert res.chance_to_win == pytest.approx(sps.norm.cdf(mu / sd))
    # Expected losses by numerical integration of the posterior.
    pdf = sps.norm(mu, sd).pdf
    loss_control = integrate.quad(lambda x: x * pdf(x), 0, mu + 12 * sd)[0]
    loss_treatment = integrate.quad(lambda x: -x * pdf(x), mu - 12 * sd, 0)[0]
    assert res.risk == pytest.approx((loss_control, loss_treatment), rel=1e-6)


def test_bayesian_prior_shrinks_towards_prior_mean() -> None:
    c, t = MeanStats.from_values([1.0, 2.0, 3.0, 4.0]), MeanStats.from_values([2.0, 3, 4, 5, 6])
    flat = bayesian_test(c, t)
    shrunk = bayesian_test(c, t, prior_variance=flat.sd**2)  # equal weight to prior and data
    assert shrunk.estimate == pytest.approx(flat.estimate / 2)
    assert shrunk.sd == pytest.approx(flat.sd / math.sqrt(2))
    with pytest.raises(ConfigurationError, match="prior_variance must be positive"):
        bayesian_test(c, t, prior_variance=0.0)


def test_gaussian_expected_loss_identity() -> None:
    mu, sd = 0.3, 1.2
    gain, loss = gaussian_expected_loss(mu, sd)
    assert gain - loss == pytest.approx(mu)  # E[max(X,0)] − E[max(−X,0)] = E[X]
    assert gaussian_expected_loss(2.0, 0.0) == (2.0, 0.0)


# --------------------------------------------------------------------------- variance reduction


def test_cuped_sufficient_stats_match_numpy_adjustment() -> None:
    rng = np.random.default_rng(5)
    xc, xt = rng.normal(5, 2, 300), rng.normal(5, 2, 320)
    yc, yt = xc + rng.normal(0, 1, 300), xt + 0.4 + rng.normal(0, 1, 320)
    res = cuped_adjust(yc, xc, yt, xt)
    sxy = ((xc - xc.mean()) * (yc - yc.mean())).sum() + ((xt - xt.mean()) * (yt - yt.mean())).sum()
    sxx = ((xc - xc.mean()) ** 2).sum() + ((xt - xt.mean()) ** 2).sum()
    theta = sxy / sxx
    x_bar = np.concatenate([xc, xt]).mean()
    adj_c, adj_t = yc - theta * (xc - x_bar), yt - theta * (xt - x_bar)
    assert res.theta == pytest.approx(theta)
    assert res.control.mean == pytest.approx(adj_c.mean())
    assert res.treatment.variance == pytest.approx(adj_t.var(ddof=1), rel=1e-8)
    raw = frequentist_test(MeanStats.from_values(yc), MeanStats.from_values(yt), relative=False)
    adjusted = frequentist_test(res.control, res.treatment, relative=False)
    assert adjusted.se < 0.6 * raw.se
    # The SQL-aggregate path gives the same answer as the array path.
    via_sums = cuped(CupedStats.from_arrays(yc, xc), CupedStats.from_arrays(yt, xt))
    assert via_sums == res


def test_cuped_without_covariate_variance_is_a_no_op() -> None:
    y = [1.0, 2.0, 4.0]
    res = cuped_adjust(y, [1.0, 1.0, 1.0], y, [1.0, 1.0, 1.0])
    assert res.theta == 0.0
    assert res.control == MeanStats.from_values(y)


def test_post_stratify_single_stratum_equals_plain_test(
    samples: tuple[np.ndarray, np.ndarray],
) -> None:
    c, t = MeanStats.from_values(samples[0]), MeanStats.from_values(samples[1])
    plain = frequentist_test(c, t)
    strat = post_stratify([c], [t], [3.0])
    assert strat.method == "post-stratified"
    assert (strat.estimate, strat.se, strat.df) == pytest.approx(
        (plain.estimate, plain.se, plain.df)
    )


def test_post_stratify_weights_segments_by_hand() -> None:
    c = [ProportionStats(1000, 100), ProportionStats(500, 200)]
    t = [ProportionStats(1000, 120), ProportionStats(500, 210)]
    res = post_stratify(c, t, [0.75, 0.25], relative=False)
    effect = 0.75 * (0.12 - 0.10) + 0.25 * (0.42 - 0.40)
    var = 0.75**2 * (0.12 * 0.88 + 0.1 * 0.9) / 1000 + 0.25**2 * (0.42 * 0.58 + 0.4 * 0.6) / 500
    assert res.estimate == pytest.approx(effect)
    assert res.se == pytest.approx(math.sqrt(var))
    rel = post_stratify(c, t, [3, 1])
    mc, mt = 0.75 * 0.1 + 0.25 * 0.4, 0.75 * 0.12 + 0.25 * 0.42
    assert rel.estimate == pytest.approx((mt - mc) / mc)
    with pytest.raises(ModelError, match="one weight per stratum"):
        post_stratify(c, t, [1.0])


# --------------------------------------------------------------------------- small samples


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    ref = sps.binomtest(7, 40).proportion_ci(0.9, method="wilson")
    assert wilson_interval(7, 40, alpha=0.1) == pytest.approx((ref.low, ref.high))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_proportion_test_uses_fisher_for_small_counts() -> None:
    # Expected cells: successes 11 × 20/40 = 5.5 per arm, failures 14.5: all ≥ 5 → z test.
    res = proportion_test(ProportionStats(20, 2), ProportionStats(20, 9), relative=False)
    assert res.method == "z-test"
    # Successes 7 × 12/24 = 3.5 per arm < 5 → Fisher.
    small = proportion_test(ProportionStats(12, 1), ProportionStats(12, 6), relative=False)
    assert small.method == "fisher-exact"
    ref = sps.fisher_exact([[6, 6], [1, 11]])
    assert small.p_value == pytest.approx(ref.pvalue)
    assert small.estimate == pytest.approx(5 / 12)
    greater = proportion_test(ProportionStats(12, 1), ProportionStats(12, 6), alternative="greater")
    assert greater.p_value == pytest.approx(sps.fisher_exact([[6, 6], [1, 11]], "greater").pvalue)
    assert greater.ci_high == math.inf and greater.estimate == pytest.approx(5.0)


def test_newcombe_interval_known_value() -> None:
    # Newcombe (1998), example (a): 56/70 vs 48/80, method 10 gives 0.0524 to 0.3339.
    res = proportion_test(
        ProportionStats(80, 48), ProportionStats(70, 56), relative=False, min_expected=1e9
    )
    assert res.method == "fisher-exact"
    assert (res.ci_low, res.ci_high) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_fisher_relative_interval_contains_estimate_and_zero_baseline() -> None:
    res = proportion_test(ProportionStats(15, 2), ProportionStats(15, 6))
    assert res.method == "fisher-exact"
    assert res.estimate == pytest.approx(2.0)
    assert res.ci_low < res.estimate < res.ci_high
    # Close to the Katz log-ratio interval for p_t/p_c − 1 (a different, standard method).
    se_log = math.sqrt(1 / 6 - 1 / 15 + 1 / 2 - 1 / 15)
    katz = (3 * math.exp(-Z975 * se_log) - 1, 3 * math.exp(Z975 * se_log) - 1)
    assert res.ci_low == pytest.approx(katz[0], abs=0.25)
    assert res.ci_high == pytest.approx(katz[1], rel=0.5)
    zero = proportion_test(ProportionStats(15, 0), ProportionStats(15, 3))
    assert math.isnan(zero.estimate) and "control mean is zero" in (zero.reason or "")
    assert zero.absolute_effect == pytest.approx(0.2) and 0 < zero.p_value < 1


# --------------------------------------------------------------------------- checks and corrections


def test_srm_pvalue_matches_chi_square() -> None:
    assert srm_pvalue([5000, 5000], [1, 1]) == pytest.approx(1.0)
    # (5200 − 5000)²/5000 × 2 = 16 on 1 df
    assert srm_pvalue([5200, 4800], [0.5, 0.5]) == pytest.approx(sps.chi2.sf(16, 1))
    assert srm_pvalue([5200, 4800], [1, 1]) < SRM_ALPHA
    assert srm_pvalue([100, 200, 300], [1, 2, 3]) == pytest.approx(1.0)
    assert srm_pvalue([10, 3], [1, 0]) == 0.0
    assert math.isnan(srm_pvalue([0, 0], [1, 1]))
    with pytest.raises(ModelError, match="one non-negative weight per"):
        srm_pvalue([1, 2], [1])


def test_adjust_pvalues_holm_and_bh_known_tables() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert adjust_pvalues(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_pvalues(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(1)
    many = list(rng.uniform(0, 0.2, 25))
    assert adjust_pvalues(many, "bh") == pytest.approx(list(sps.false_discovery_control(many)))
    assert adjust_pvalues([0.6, 0.6], "holm") == [1.0, 1.0]


def test_adjust_pvalues_passes_missing_values_through() -> None:
    out = adjust_pvalues([0.01, None, math.nan, 0.04], "holm")
    assert out[0] == pytest.approx(0.02) and out[3] == pytest.approx(0.04)
    assert out[1] is None and math.isnan(out[2])  # type: ignore[arg-type]
    assert adjust_pvalues([None], "bh") == [None]
    with pytest.raises(ConfigurationError, match="'holm' or 'bh'"):
        adjust_pvalues([0.1], "bonferroni")


# --------------------------------------------------------------------------- planning


def test_sample_size_matches_hand_computation() -> None:
    p, d = 0.1, 0.02
    root = Z975 * math.sqrt(2 * 0.1 * 0.9) + Z80 * math.sqrt(0.1 * 0.9 + 0.12 * 0.88)
    assert sample_size_per_arm(p, d) == pytest.approx(root**2 / d**2)
    assert sample_size_per_arm(p, d) == pytest.approx(3622.6, abs=0.1)  # unrounded
    assert sample_size_per_arm(0.5, -0.1) == pytest.approx(sample_size_per_arm(0.5, 0.1))
    with pytest.raises(ConfigurationError, match="mde_absolute must be non-zero"):
        sample_size_per_arm(0.1, 0.0)


def test_power_and_mde_invert_sample_size() -> None:
    n = sample_size_per_arm(0.05, 0.01, alpha=0.05, power=0.8)
    assert power(0.05, 0.01, n) == pytest.approx(0.8, abs=1e-9)
    assert power(0.05, 0.01, 4 * n) > 0.99
    assert mde(0.05, n) == pytest.approx(0.01, rel=1e-6)
    assert mde(0.05, n, power=0.9) > 0.01
    assert math.isnan(mde(0.5, 1.0))  # one unit per arm cannot detect anything
    with pytest.raises(ConfigurationError, match="baseline_rate"):
        power(0.0, 0.01, 100)


def test_degenerate_ratio_and_empty_arm_give_reasons() -> None:
    no_opens = ratio_stats([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    some = ratio_stats([1.0, 0.0, 2.0], [2.0, 1.0, 3.0])
    res = frequentist_test(no_opens, some)
    assert math.isnan(res.estimate) and "zero denominator" in (res.reason or "")
    empty = proportion_test(ProportionStats(0, 0), ProportionStats(10, 3))
    assert empty.method == "fisher-exact" and empty.reason == "an arm is empty"


def test_p_value_does_not_depend_on_the_reported_scale() -> None:
    """`effect: relative | absolute` changes only the estimate and interval, never the test."""
    skewed = [
        (MeanStats.from_values([0, 0, 0, 120, 0, 0, 35, 0, 0, 0] * 30),
         MeanStats.from_values([0, 80, 0, 120, 0, 0, 35, 0, 60, 0] * 30)),
        (ProportionStats(5000, 110), ProportionStats(5000, 150)),
    ]  # fmt: skip
    for c, t in skewed:
        test = proportion_test if isinstance(c, ProportionStats) else frequentist_test
        rel, absolute = test(c, t), test(c, t, relative=False)
        assert rel.p_value == absolute.p_value
        assert (rel.ci_low > 0) == (absolute.ci_low > 0) == (rel.p_value < 0.05)

"""Variance reduction: CUPED from sufficient statistics, and post-stratification."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cpo.errors import ModelError
from cpo.experiments.stats.frequentist import (
    FrequentistResult,
    TestOptions,
    _degenerate,
    _Effect,
    _test_effect,
)
from cpo.experiments.stats.sufficient import MeanStats, Stats, _check_count, _paired_sums


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
    options = TestOptions(relative, alpha, alternative, sequential, sequential_tuning)
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
    n_total = sum(s.n for s in strata_control) + sum(s.n for s in strata_treatment)
    effect = _stratified_effect(strata_control, strata_treatment, w)
    return _test_effect(effect, n_total, options, "post-stratified")


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

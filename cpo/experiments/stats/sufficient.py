"""Sufficient statistics per arm (``MeanStats``, ``ProportionStats``, ``RatioStats``) and the
shared validation helpers. See `cpo.experiments.stats` for the conventions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cpo.errors import ConfigurationError, ModelError

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
    return (
        int(aa.size),
        float(aa.sum()),
        float(np.dot(aa, aa)),
        float(ba.sum()),
        float(np.dot(ba, ba)),
        float(np.dot(aa, ba)),
    )


Stats = MeanStats | ProportionStats | RatioStats


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

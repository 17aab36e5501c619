"""Normal, Student-t and chi-square tail functions, straight from `scipy.special`.

These are the ufuncs `scipy.stats.norm`, `scipy.stats.t` and `scipy.stats.chi2` evaluate
(``ndtr``, ``ndtri``, ``stdtr``, ``stdtrit``, ``chdtrc``), so the numbers are the same; called
directly they skip the frozen distribution and argument checks that cost about 1 ms a call,
which a build (one call per arm, metric and segment) and the simulation tests (thousands) would
otherwise pay.

scipy is imported on first use, here and in the other modules of this package: its
import takes about a second that commands which analyse nothing (``ls``, ``compile``) skip.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

_SQRT_2PI = math.sqrt(2.0 * math.pi)


@functools.cache
def _special() -> ModuleType:
    from scipy import special

    return special


def norm_cdf(x: float) -> float:
    """Φ(x)."""
    return float(_special().ndtr(x))


def norm_sf(x: float) -> float:
    """1 − Φ(x), without cancellation in the upper tail."""
    return float(_special().ndtr(-x))


def norm_ppf(q: float) -> float:
    """Φ⁻¹(q)."""
    return float(_special().ndtri(q))


def norm_isf(q: float) -> float:
    """The z with 1 − Φ(z) = q (the upper-tail critical value)."""
    return -float(_special().ndtri(q))


def norm_pdf(x: float) -> float:
    """The standard normal density."""
    return math.exp(-x * x / 2.0) / _SQRT_2PI


def t_sf(x: float, df: float) -> float:
    """Student-t survival function with `df` degrees of freedom."""
    return float(_special().stdtr(df, -x))


def t_isf(q: float, df: float) -> float:
    """The t with survival probability q (the upper-tail critical value)."""
    return -float(_special().stdtrit(df, q))


def chi2_sf(x: float, df: float) -> float:
    """Chi-square survival function with `df` degrees of freedom."""
    return float(_special().chdtrc(df, x))

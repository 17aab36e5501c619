"""Checks across arms and comparisons: sample ratio mismatch, multiple-testing corrections."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cpo.errors import ConfigurationError, ModelError
from cpo.experiments.stats.distributions import chi2_sf
from cpo.experiments.stats.sufficient import NAN

SRM_ALPHA = 0.001
"""Warn about a sample ratio mismatch when `srm_pvalue` is below this."""


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
    statistic = float(((obs - expected) ** 2 / expected).sum())  # scipy.stats.chisquare's
    return chi2_sf(statistic, obs.size - 1)


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
    valid = {i: p for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)}
    out: list[float | None] = list(pvalues)
    m = len(valid)
    if m == 0:
        return out
    order = sorted(valid, key=valid.__getitem__)
    ps = np.array([valid[i] for i in order], dtype=float)
    ranks = np.arange(1, m + 1)
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - ranks + 1) * ps))
    else:
        adjusted = np.minimum.accumulate(np.minimum(1.0, m / ranks * ps)[::-1])[::-1]
    for i, value in zip(order, adjusted, strict=True):
        out[i] = float(value)
    return out

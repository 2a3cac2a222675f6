"""The range of every number the pipeline reports with an interval, in one place.

A bootstrap interval of a bounded quantity must stay in its range: a CKA above 1 or an s(ε)
below 0 is not a statement about any population. The finite-seed correction of
:func:`convergent.statistics.pairwise` widens each replicate's deviation from the estimate, so
:mod:`convergent.statistics` applies it on a scale that maps the range onto the real line and
back (:func:`link`); every table looks its quantity's range up here by name.

``(lo, hi)`` with ``±inf`` for an open side. A quantity that is missing raises: a new table must
say what its numbers can be before it gets intervals.

>>> bounds("linear_cka"), bounds("mi"), bounds("difference")
((0.0, 1.0), (0.0, inf), None)
>>> g, inverse = link((0.0, 1.0))
>>> float(inverse(g(0.25)))
0.25
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["RANGES", "bounds", "link", "check"]

INF = math.inf

RANGES: dict[str, tuple[float, float]] = {
    # whole-layer similarity measures (convergent.similarity.MEASURES)
    "linear_cka": (0.0, 1.0),
    "rbf_cka": (0.0, 1.0),
    # the unbiased HSIC estimates are U-statistics of an indefinite kernel: negative values and,
    # with few rows, values above 1 occur, so the debiased ratio has no range
    "debiased_cka": (-INF, INF),
    "cca": (0.0, 1.0),  # mean canonical correlation
    "svcca": (0.0, 1.0),
    "pwcca": (0.0, 1.0),  # weighted mean of canonical correlations
    "procrustes": (0.0, math.sqrt(2.0)),  # sqrt(2 - 2 nuclear norm) of unit-norm representations
    "soft_matching": (0.0, INF),  # square root of a transport cost
    "rsa": (-1.0, 1.0),  # Spearman correlation
    "matching": (-1.0, 1.0),  # mean correlation of matched units (also Li et al. Table 1)
    "subspace": (0.0, 1.0),  # Wang et al. s(ε): a fraction of neurons
    "mutual_knn": (0.0, 1.0),  # fraction of shared neighbours
    # Li et al. Table 1
    "semi": (-1.0, 1.0),  # mean correlation of the semi-matching
    "overlap": (0.0, 1.0),  # fraction of units whose two partners coincide
    # per-network and per-table quantities
    "accuracy": (0.0, 1.0),
    "mi": (0.0, INF),  # mutual information (bits or nats)
    "nmi": (0.0, 1.0),  # normalized mutual information
    "correlation": (-1.0, 1.0),
    "fraction": (0.0, 1.0),
    "count": (0.0, INF),
    "loss": (0.0, INF),  # a squared error or a cross-entropy
    # functional comparisons: a barrier is the largest excess over the straight line between the
    # ends, which the ends themselves give as 0; a stitching penalty is an accuracy difference
    "loss_barrier": (0.0, INF),
    "accuracy_barrier": (0.0, 1.0),
    "stitching_penalty": (-1.0, 1.0),
    "difference": (-INF, INF),
}


def bounds(name: str) -> tuple[float, float] | None:
    """``(lo, hi)`` of the quantity ``name``, None when it is unbounded on both sides."""
    if name not in RANGES:
        raise KeyError(f"no range known for {name!r}: add it to convergent.ranges.RANGES")
    lo, hi = RANGES[name]
    return None if (lo, hi) == (-INF, INF) else (float(lo), float(hi))


#: how close to a bound (relative to the range) a value is moved before the link: the link of the
#: bound itself is infinite, and a value a millionth from it is already extreme on the link scale
#: (logit 13.8, against 4.6 at 0.99); closer, one pair at the bound would dominate a basic interval
#: reflected there.
EDGE = 1e-6


def check(values: np.ndarray, range_: tuple[float, float], what: str = "value") -> None:
    """Raise when a finite value lies outside ``range_`` (by more than rounding)."""
    lo, hi = range_
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    tol = 1e-9 * (hi - lo if math.isfinite(hi - lo) else max(1.0, abs(lo) if math.isfinite(lo) else abs(hi)))
    if v.size and ((v < lo - tol).any() or (v > hi + tol).any()):
        raise ValueError(f"{what} outside its range [{lo}, {hi}]: {v.min():.6g} to {v.max():.6g}")


def link(range_: tuple[float, float] | None) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                         Callable[[np.ndarray], np.ndarray]] | None:
    """``(g, g⁻¹)`` mapping the range onto the real line: the logit of the position in a finite
    range (for ``[-1, 1]`` that is twice Fisher's z, ``atanh``), the log of the distance to a
    single finite bound; None for an unbounded quantity. Values within :data:`EDGE` (relative)
    of a bound are moved to it, so the bound maps to a large finite number."""
    if range_ is None:
        return None
    lo, hi = float(range_[0]), float(range_[1])
    if not lo < hi:
        raise ValueError(f"a range needs lo < hi, got ({lo}, {hi})")

    def checked(x):
        x = np.asarray(x, dtype=np.float64)
        check(x, (lo, hi))
        return x

    if math.isfinite(lo) and math.isfinite(hi):
        width = hi - lo

        def g(x):
            u = np.clip((checked(x) - lo) / width, EDGE, 1 - EDGE)
            return np.log(u) - np.log1p(-u)

        def inverse(z):
            # expit through tanh: no overflow warning for the large |z| of values at a bound
            return np.clip(lo + width * (0.5 * (1 + np.tanh(np.asarray(z, dtype=np.float64) / 2))), lo, hi)

        return g, inverse
    if math.isfinite(lo):
        return (lambda x: np.log(np.maximum(checked(x) - lo, EDGE)),
                lambda z: lo + np.exp(np.minimum(np.asarray(z, dtype=np.float64), 700.0)))
    if math.isfinite(hi):
        return (lambda x: np.log(np.maximum(hi - checked(x), EDGE)),
                lambda z: hi - np.exp(np.minimum(np.asarray(z, dtype=np.float64), 700.0)))
    return None

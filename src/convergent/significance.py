"""Significance: permutation tests over probe inputs and Holm's correction across layers.

The papers' comparisons ("trained networks match better than chance") are tests. The chance
level here is the permutation null: the same two networks with the pairing of probe inputs
broken, whole inputs at a time. Reported with :mod:`convergent.statistics`, which re-exports
everything here.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(50, 2)); y = x + rng.normal(size=(50, 2))
>>> res = permutation_test(lambda a, b: np.corrcoef(a[:, 0], b[:, 0])[0, 1], x, y, permutations=99)
>>> res.p_value, res.permutations
(0.01, 99)
>>> holm([res.p_value, 0.04, 0.3]).round(2).tolist()
[0.03, 0.08, 0.3]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = ["PermutationTest", "input_rows", "permute_inputs", "permutation_test", "permutation_p_value", "tail_p_value", "holm"]


@dataclass(frozen=True)
class PermutationTest:
    """Observed statistic, permutation p-value and the null it came from (``permutations`` draws)."""

    statistic: float
    p_value: float
    permutations: int
    alternative: str
    exact: bool
    null: np.ndarray = field(repr=False, compare=False)


def input_rows(row_input: np.ndarray) -> np.ndarray:
    """Rows of each probe input ``[n_inputs, rows_per_input]``, in row order within an input.

    Permuting inputs permutes these rows as wholes; every input must have the same number of rows
    (a fixed number of positions per image, or one row per input).
    """
    row_input = np.asarray(row_input).ravel()
    inputs, counts = np.unique(row_input, return_counts=True)
    if counts.min() != counts.max():
        raise ValueError(f"inputs have between {counts.min()} and {counts.max()} rows; permuting whole "
                         "inputs needs the same number of rows for every input")
    order = np.argsort(row_input, kind="stable")
    return order.reshape(len(inputs), counts[0])


def permute_inputs(row_input: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A row order that moves whole probe inputs: ``y[permute_inputs(row_input, rng)]`` puts the
    rows of one input, in their order, where another input's rows were (``row_input``: the probe
    input of each row, any order, inputs may have different numbers of rows).

    Inputs are exchanged only with inputs of the same number of rows (a permutation within each
    stratum of equal counts), so a subsample of rows that keeps more rows of some images than of
    others can still be permuted without splitting an image. Under the null (no pairing of inputs
    between the networks) inputs are exchangeable, and so they are within strata: the null stays
    exact; an input alone in its stratum stays in place, which can only make p larger.
    """
    row_input = np.asarray(row_input).ravel()
    _, inverse, counts = np.unique(row_input, return_inverse=True, return_counts=True)
    grouped = np.argsort(inverse, kind="stable")  # rows input by input, row order kept within
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    target = np.arange(len(counts))
    for count in np.unique(counts):
        members = np.flatnonzero(counts == count)
        target[members] = members[rng.permutation(len(members))]
    owner = np.repeat(np.arange(len(counts)), counts)
    within = np.arange(len(row_input)) - starts[owner]
    order = np.empty(len(row_input), dtype=np.int64)
    order[grouped] = grouped[starts[target[owner]] + within]
    return order


def permutation_test(statistic: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray, *,
                     permutations: int = 999, seed: int = 0, row_input: np.ndarray | None = None,
                     alternative: str = "greater") -> PermutationTest:
    """Is ``statistic(x, y)`` larger than when the pairing of probe inputs is broken?

    The null keeps each network's own structure and shuffles which input of ``y`` faces which
    input of ``x``: whole inputs move, so the rows at one image's positions stay together
    (``row_input``: the probe input of each row; default one row per input). Rows within an
    image are not exchangeable, so permuting rows one by one would make p-values too small.
    ``scipy.stats.permutation_test`` draws the permutations; a random (not exhaustive) test
    reports ``p = (1 + #{null >= observed}) / (1 + permutations)`` (Phipson & Smyth 2010), never 0.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have paired rows; got {len(x)} and {len(y)}")
    groups = input_rows(np.arange(len(x)) if row_input is None else row_input)
    xs = x[groups.ravel()]

    def stat(order):
        return statistic(xs, y[groups[order].ravel()])

    res = stats.permutation_test((np.arange(len(groups)),), stat, permutation_type="pairings",
                                 vectorized=False, n_resamples=permutations, alternative=alternative,
                                 rng=np.random.default_rng(seed))
    exact = len(res.null_distribution) < permutations or math.factorial(min(len(groups), 20)) <= permutations
    return PermutationTest(float(res.statistic), float(res.pvalue), len(res.null_distribution), alternative,
                           bool(exact), np.asarray(res.null_distribution))


def permutation_p_value(observed: float, null: np.ndarray, alternative: str = "greater") -> float:
    """p-value of ``observed`` against ``len(null)`` random permutations computed elsewhere:
    ``(1 + #{null >= observed}) / (1 + len(null))`` for ``greater`` (scipy's rule and tolerance)."""
    return tail_p_value(null, observed, alternative, tolerance=abs(observed) * np.finfo(np.float64).eps * 100)


def tail_p_value(sample: np.ndarray, point: float, alternative: str = "greater", tolerance: float = 0.0) -> float:
    """``(1 + #{sample >= point}) / (1 + n)`` over the finite values of ``sample`` for ``greater``,
    ``#{sample <= point}`` for ``less``, twice the smaller (capped at 1) for ``two-sided``; values
    within ``tolerance`` of ``point`` count as reaching it. The one counting rule of the
    permutation and the bootstrap p-values."""
    sample = np.asarray(sample, dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    ge = (1 + np.count_nonzero(sample >= point - tolerance)) / (1 + sample.size)
    le = (1 + np.count_nonzero(sample <= point + tolerance)) / (1 + sample.size)
    if alternative == "greater":
        return float(ge)
    if alternative == "less":
        return float(le)
    if alternative == "two-sided":
        return float(min(1.0, 2 * min(ge, le)))
    raise ValueError(f"alternative must be greater, less or two-sided, got {alternative!r}")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values, controlling the family-wise error rate.

    The i-th smallest of m p-values becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; NaN
    entries (tests not run) are left out of m and stay NaN. Written here because scipy has only
    false-discovery-rate corrections, and statsmodels is a heavy dependency for ten lines.

    >>> holm([0.01, 0.04, 0.03, 0.5]).round(3).tolist()
    [0.04, 0.09, 0.09, 0.5]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(p[ok], kind="stable")]
    m = ok.size
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out

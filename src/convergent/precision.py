"""How many seeds a target interval width needs, from the spread measured over the seeds at hand.

A pairwise statistic over S seeds (a mean over their pairs) varies with the seeds through each
seed's own effect and each pair's, ``v_ab = mu + u_a + u_b + e_ab``; its variance is
``4 var(u)/S + 2 var(e)/(S(S-1))``. :func:`variance_components` estimates both parts,
:func:`seeds_for_width` inverts the normal-approximation width. Re-exported by
:mod:`convergent.statistics`.

>>> import itertools
>>> pairs = list(itertools.combinations(range(4), 2))
>>> plan = seeds_for_width([0.81, 0.78, 0.80, 0.84, 0.79, 0.83], 0.02, pairs=pairs)
>>> plan.current_seeds, plan.seeds
(4, 9)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
from scipy import stats

__all__ = ["VarianceComponents", "variance_components", "SeedPlan", "seeds_for_width"]

LEVEL = 0.95


@dataclass(frozen=True)
class VarianceComponents:
    """Pairwise values ``v_ab = mu + u_a + u_b + e_ab``: seed effects ``u`` (variance ``seed``)
    and pair-specific deviations ``e`` (variance ``pair``), by the method of moments."""

    mean: float
    seed: float
    pair: float
    seeds: int
    note: str = ""

    def variance_of_mean(self, seeds: int) -> float:
        """Variance over seed draws of the mean over all pairs of ``seeds`` seeds:
        ``4 seed / S + 2 pair / (S (S - 1))`` (Hoeffding decomposition of the pair mean)."""
        return 4 * self.seed / seeds + 2 * self.pair / (seeds * (seeds - 1))


def variance_components(values: Sequence[float], pairs: Sequence[tuple[Hashable, Hashable]]) -> VarianceComponents:
    """Seed and pair variance of a pairwise statistic measured on every pair of S seeds.

    Least squares for the additive model (the diallel without self-pairs; Griffing 1956, method
    4): ``u_a = (S-1)/(S-2) (r_a - mean)`` with ``r_a`` the mean of a's pairs; the residual mean
    square estimates ``pair`` (``S(S-3)/2`` degrees of freedom) and the seed mean square
    ``(S-2) sum u^2 / (S-1)`` has expectation ``pair + (S-2) seed``. With 3 seeds the two cannot be
    separated: all of the spread is charged to the seeds (conservative: it shrinks slowest).
    """
    nets = tuple(dict.fromkeys(net for pair in pairs for net in pair))
    s = len(nets)
    v = np.asarray(values, dtype=np.float64)
    if len(v) != len(pairs):
        raise ValueError(f"need one value per pair; got {len(v)} values for {len(pairs)} pairs")
    keys = {frozenset(p) for p in pairs}
    if len(keys) != len(pairs) or len(keys) != s * (s - 1) // 2:
        raise ValueError(f"need each of the {s * (s - 1) // 2} pairs of {s} seeds exactly once, got {len(pairs)}")
    mean = float(v.mean())
    if s == 2:
        return VarianceComponents(mean, math.nan, math.nan, s,
                                  "one seed pair: the spread over seeds cannot be measured")
    if s == 3:
        return VarianceComponents(mean, float(v.var(ddof=1)) / 2, 0.0, s,
                                  "3 seeds: seed and pair variance not separable; all charged to seeds")
    where = {net: i for i, net in enumerate(nets)}
    ia = np.array([where[a] for a, _ in pairs])
    ib = np.array([where[b] for _, b in pairs])
    rows = np.bincount(ia, weights=v, minlength=s) + np.bincount(ib, weights=v, minlength=s)
    u = (s - 1) / (s - 2) * (rows / (s - 1) - mean)
    residual = v - mean - u[ia] - u[ib]
    pair = float(residual @ residual) / (s * (s - 3) / 2)
    seed_ms = (s - 2) * float(u @ u) / (s - 1)
    return VarianceComponents(mean, max(0.0, (seed_ms - pair) / (s - 2)), pair, s)


@dataclass(frozen=True)
class SeedPlan:
    """How many seeds a target interval width needs, from the measured spread.

    ``seeds`` is None when the width is out of reach (the input floor alone is wider, or the
    spread over seeds cannot be measured); ``current_width`` is the model's width at the seeds
    measured, to compare with the bootstrap interval.
    """

    width: float
    level: float
    seeds: int | None
    current_seeds: int
    current_width: float
    seed_sd: float
    pair_sd: float
    input_sd: float
    note: str = ""


def seeds_for_width(values: Sequence[float], width: float, *, pairs: Sequence[tuple] | None = None,
                    level: float = LEVEL, input_sd: float = 0.0, max_seeds: int = 10_000) -> SeedPlan:
    """Smallest number of seeds whose normal-approximation interval ``2 z sqrt(V(S))`` is at most
    ``width``.

    Per-network values (``pairs=None``): ``V(S) = var / S``. Pairwise values over every pair:
    ``V(S) = 4 seed / S + 2 pair / (S(S-1))`` (:func:`variance_components`). ``input_sd``, the
    standard deviation due to the probe inputs (an inputs-only bootstrap's), is a floor that more
    seeds do not lower: it is added as ``input_sd**2``.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    z = float(stats.norm.ppf((1 + level) / 2))
    v = np.asarray(values, dtype=np.float64)
    note = ""
    if pairs is None:
        s = len(v)
        if s < 2:
            raise ValueError("need values of at least 2 networks")
        seed_var, pair_var = float(v.var(ddof=1)), 0.0

        def variance(n):
            return seed_var / n + input_sd**2
    else:
        comp = variance_components(v, pairs)
        s, note = comp.seeds, comp.note
        seed_var, pair_var = comp.seed, comp.pair
        if not np.isfinite(seed_var):
            return SeedPlan(width, level, None, s, math.nan, math.nan, math.nan, input_sd, note)

        def variance(n):
            return comp.variance_of_mean(n) + input_sd**2
    current = 2 * z * math.sqrt(variance(s))
    if 2 * z * input_sd >= width:
        return SeedPlan(width, level, None, s, current, math.sqrt(seed_var), math.sqrt(pair_var), input_sd,
                        "; ".join(filter(None, [note, "the probe inputs alone make the interval wider"])))
    lo, hi = 2, max_seeds
    if 2 * z * math.sqrt(variance(hi)) > width:
        return SeedPlan(width, level, None, s, current, math.sqrt(seed_var), math.sqrt(pair_var), input_sd,
                        "; ".join(filter(None, [note, f"more than {max_seeds} seeds"])))
    while lo < hi:  # the variance decreases with S
        mid = (lo + hi) // 2
        if 2 * z * math.sqrt(variance(mid)) <= width:
            hi = mid
        else:
            lo = mid + 1
    return SeedPlan(width, level, lo, s, current, math.sqrt(seed_var), math.sqrt(pair_var), input_sd, note)

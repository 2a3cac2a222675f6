"""One-to-one unit alignment between two networks (Li et al. 2016, §3.1).

Given a between-net similarity matrix ``S`` (rows: units of net A, columns: units of net B),

* the *semi-matching* pairs every unit of A with its most similar unit of B (row-wise argmax;
  several A units may share a partner), and
* the *bipartite matching* is the one-to-one assignment maximising the summed similarity
  (``scipy.optimize.linear_sum_assignment``).

Units whose row or column is all NaN (dead units, zero variance) are excluded and reported with
partner ``-1`` and value NaN rather than silently matched.

>>> import numpy as np
>>> S = np.array([[0.9, 0.8], [0.85, 0.1]])
>>> semi_matching(S).partner.tolist(), bipartite_matching(S).partner.tolist()
([0, 0], [1, 0])
>>> overlap_ratio(semi_matching(S), bipartite_matching(S))
0.5

The similarity can be a correlation matrix (``convergent.correlation``) or a mutual-information
matrix (``convergent.mutual_information``); nothing here depends on which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from convergent.outputs import atomic_output

__all__ = [
    "Match",
    "semi_matching",
    "bipartite_matching",
    "overlap_ratio",
    "match_frame",
    "summarize_match",
    "summarize_pairs",
    "extremes",
    "top_k_agreement",
    "partner_agreement",
    "write_match_csv",
    "read_match_csv",
    "frame_matches",
]


@dataclass(frozen=True)
class Match:
    """Per unit of net A: index of its partner in net B (-1 if none) and their similarity."""

    partner: np.ndarray
    value: np.ndarray

    @property
    def matched(self) -> np.ndarray:
        return self.partner >= 0


def _live(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nan = np.isnan(similarity)
    return ~nan.all(axis=1), ~nan.all(axis=0)


def semi_matching(similarity: np.ndarray) -> Match:
    """Row-wise argmax of ``similarity``, ignoring dead (all-NaN) rows and columns."""
    similarity = np.asarray(similarity, dtype=np.float64)
    live_rows, live_cols = _live(similarity)
    partner = np.full(similarity.shape[0], -1)
    value = np.full(similarity.shape[0], np.nan)
    if live_rows.any() and live_cols.any():
        sub = np.where(np.isnan(similarity), -np.inf, similarity)[np.ix_(live_rows, live_cols)]
        best = sub.argmax(axis=1)
        partner[live_rows] = np.flatnonzero(live_cols)[best]
        value[live_rows] = sub[np.arange(len(best)), best]
    return Match(partner, value)


def bipartite_matching(similarity: np.ndarray) -> Match:
    """One-to-one assignment of A's units to B's maximising the summed similarity.

    With more live units in A than in B, the surplus A units keep partner -1 (and NaN value).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    live_rows, live_cols = _live(similarity)
    partner = np.full(similarity.shape[0], -1)
    value = np.full(similarity.shape[0], np.nan)
    if live_rows.any() and live_cols.any():
        sub = similarity[np.ix_(live_rows, live_cols)]
        # A NaN between two live units (possible only with degenerate inputs) must never be preferred.
        sub = np.where(np.isnan(sub), np.nanmin(sub) - 1.0, sub)
        rows, cols = linear_sum_assignment(sub, maximize=True)
        partner[np.flatnonzero(live_rows)[rows]] = np.flatnonzero(live_cols)[cols]
        value[np.flatnonzero(live_rows)[rows]] = sub[rows, cols]
    return Match(partner, value)


def overlap_ratio(semi: Match, matching: Match) -> float:
    """Fraction of A's semi-matched units whose bipartite partner is the same (Li Table 1, col. 3).

    Dead A units (no semi partner) are left out of numerator and denominator; NaN if none is live.

    >>> overlap_ratio(Match(np.array([0, 0, -1]), np.ones(3)), Match(np.array([1, 0, -1]), np.ones(3)))
    0.5
    """
    live = semi.partner >= 0
    if not live.any():
        return float("nan")
    return float(np.mean(semi.partner[live] == matching.partner[live]))


def match_frame(
    similarity: np.ndarray,
    dead_a: np.ndarray | None = None,
    dead_b: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per unit of net A: dead flags, semi-matching and bipartite-matching partners and values.

    ``dead_a``/``dead_b`` (bool per unit) mark zero-variance units; their rows/columns of
    ``similarity`` are set to NaN so they are listed but never matched. Without them, units whose
    row/column is already all NaN count as dead. Columns: ``unit, dead_a, dead_b, semi_partner,
    semi_value, match_partner, match_value, coincide`` (``dead_b`` refers to B's unit with the same
    index; NaN where B has fewer units).

    >>> match_frame(np.array([[0.9, 0.8], [0.85, 0.1]]))[["semi_partner", "match_partner"]].values.tolist()
    [[0, 1], [0, 0]]
    """
    sim = np.array(similarity, dtype=np.float64)
    n_a, n_b = sim.shape
    if dead_a is not None:
        sim[np.asarray(dead_a, dtype=bool), :] = np.nan
    if dead_b is not None:
        sim[:, np.asarray(dead_b, dtype=bool)] = np.nan
    live_rows, live_cols = _live(sim)
    semi, match = semi_matching(sim), bipartite_matching(sim)
    dead_b_col = np.full(n_a, np.nan)
    k = min(n_a, n_b)
    dead_b_col[:k] = ~live_cols[:k]
    frame = pd.DataFrame(
        {
            "unit": np.arange(n_a),
            "dead_a": ~live_rows,
            "dead_b": pd.array(np.where(np.isnan(dead_b_col), None, dead_b_col == 1), dtype="boolean"),
            "semi_partner": semi.partner,
            "semi_value": semi.value,
            "match_partner": match.partner,
            "match_value": match.value,
            "coincide": (semi.partner == match.partner) & (semi.partner >= 0),
        }
    )
    return frame


def write_match_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a :func:`match_frame` table atomically (a partial file is never left under ``path``)."""
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.17g")


def read_match_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_match_csv`, with its dtypes restored."""
    frame = pd.read_csv(path)
    frame["dead_b"] = frame["dead_b"].astype("boolean")
    return frame


def frame_matches(frame: pd.DataFrame) -> tuple[Match, Match]:
    """The semi-matching and the bipartite matching stored in a :func:`match_frame` table."""
    return _as_matches(frame)


def _as_matches(frame: pd.DataFrame) -> tuple[Match, Match]:
    return (
        Match(frame["semi_partner"].to_numpy(), frame["semi_value"].to_numpy(dtype=float)),
        Match(frame["match_partner"].to_numpy(), frame["match_value"].to_numpy(dtype=float)),
    )


def summarize_match(frame: pd.DataFrame) -> dict[str, float]:
    """Li Table 1 row for one pair: mean semi-matching and matching value, overlap ratio, dead counts.

    Means are over live (matched) units only.
    """
    semi, match = _as_matches(frame)
    return {
        "semi": float(np.nanmean(semi.value)) if semi.matched.any() else float("nan"),
        "matching": float(np.nanmean(match.value)) if match.matched.any() else float("nan"),
        "overlap": overlap_ratio(semi, match),
        "dead_a": int(frame["dead_a"].sum()),
        "dead_b": int(frame["dead_b"].fillna(False).sum()),
    }


def summarize_pairs(frames: dict[tuple[int, int], pd.DataFrame], first: tuple[int, int] | None = None) -> dict:
    """Table-1 row of one layer over several seed pairs.

    Returns the first pair's values (``first``, default: the smallest pair, as Li reported Net1 vs
    Net2) and mean and standard deviation (ddof=1; NaN for a single pair) over all pairs, so one
    can tell whether the reported pair was typical.
    """
    if not frames:
        raise ValueError("no pairs")
    first = min(frames) if first is None else first
    rows = {pair: summarize_match(frame) for pair, frame in frames.items()}
    out: dict = {"pair": f"{first[0]}-{first[1]}", "n_pairs": len(rows)}
    for key in ("semi", "matching", "overlap"):
        values = np.array([row[key] for row in rows.values()], dtype=float)
        out[key] = rows[first][key]
        out[f"{key}_mean"] = float(np.nanmean(values))
        out[f"{key}_std"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else float("nan")
    return out


def extremes(match: Match, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Units of A with the ``k`` highest and ``k`` lowest matched values (Li Fig. 2/4).

    Both are in decreasing order of value, as the leftmost and rightmost points of Li's Fig. 3,
    so ``worst[-1]`` is the worst unit. Dead units are never chosen; with fewer than ``2k`` live
    units the two sets overlap.

    >>> best, worst = extremes(Match(np.array([0, 1, 2, -1]), np.array([0.2, 0.9, 0.5, np.nan])), k=1)
    >>> best.tolist(), worst.tolist()
    ([1], [0])
    """
    live = np.flatnonzero(match.matched & ~np.isnan(match.value))
    order = live[np.argsort(-match.value[live], kind="stable")]
    return order[:k], order[-k:] if k else order[:0]


def top_k_agreement(first: Match, second: Match, k: int = 8) -> int:
    """How many of the ``k`` best (unit, partner) pairs of ``first`` are also among ``second``'s.

    Li §3.2: "seven out of eight highest matched pairs in the conv1 layer stay the same" when the
    correlation semi-matching is replaced by the mutual-information one.
    """
    best_first, _ = extremes(first, k)
    best_second, _ = extremes(second, k)
    pairs_first = {(int(u), int(first.partner[u])) for u in best_first}
    pairs_second = {(int(u), int(second.partner[u])) for u in best_second}
    return len(pairs_first & pairs_second)


def partner_agreement(first: Match, second: Match) -> float:
    """Fraction of units matched in both whose partners are the same; NaN if none is matched in both."""
    both = first.matched & second.matched
    if not both.any():
        return float("nan")
    return float(np.mean(first.partner[both] == second.partner[both]))

"""Wang et al. 2018 results as records and files: what the algorithms return, one layer's
comparison of two networks, its HDF5 file, and the s(ε) tables.

Torch-free, and free of the algorithms (:mod:`convergent.subspace`): the figure and table steps
import only this module, so they start fast and do not rerun when an algorithm's code changes.

File ``subspace/{layer}/{a}-{b}.h5`` (:func:`write_pair_result`, :func:`read_pair_result`): attrs
``layer, a, b, kind, n_rows, sample_size, restarts, repeats, min_rows_per_unit``; datasets ``eps`` ``[E]``,
``similarity`` ``[repeats, E]``, ``dropped_x``/``dropped_y`` ``[repeats]``, ``match_x``/``match_y``
(bool ``[repeats, E, units]``), and group ``simple/{i}`` per ε with attr ``eps`` and datasets
``x``/``y`` (bool ``[matches, units]``) and ``counts``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from convergent.integrity import open_hdf5
from convergent.outputs import atomic_output

Neuron = tuple  # ("x", i) or ("y", j)


@dataclass(frozen=True, order=True)
class SubspaceMatch:
    """A pair of neuron sets (sorted original column indices of X and of Y)."""

    x: tuple[int, ...]
    y: tuple[int, ...]

    @property
    def size(self) -> int:
        """|X| + |Y|, the size plotted in Wang Fig. 2."""
        return len(self.x) + len(self.y)

    def __contains__(self, v: Neuron) -> bool:
        side, k = v
        return k in (self.x if side == "x" else self.y)

    def neurons(self) -> list[Neuron]:
        return [("x", i) for i in self.x] + [("y", j) for j in self.y]

    def union(self, other: "SubspaceMatch") -> "SubspaceMatch":
        return SubspaceMatch(tuple(sorted(set(self.x) | set(other.x))),
                             tuple(sorted(set(self.y) | set(other.y))))


@dataclass(frozen=True)
class MaxMatch:
    """Algorithm 1's result with what s(ε) needs."""

    match: SubspaceMatch
    n_x: int  # live neurons (zero vectors dropped)
    n_y: int
    dropped_x: tuple[int, ...]
    dropped_y: tuple[int, ...]

    @property
    def x(self) -> tuple[int, ...]:
        return self.match.x

    @property
    def y(self) -> tuple[int, ...]:
        return self.match.y

    @property
    def similarity(self) -> float:
        """s(ε) = (|X*| + |Y*|) / (|𝒳| + |𝒴|) over live neurons (Wang §5.1)."""
        n = self.n_x + self.n_y
        return self.match.size / n if n else float("nan")


@dataclass(frozen=True)
class MinimalMatches:
    """Algorithm 3's result: the v-minimal matches found, and whether the search finished."""

    v: Neuron
    matches: tuple[SubspaceMatch, ...]
    complete: bool  # False: the budget of Algorithm-2 calls ran out; more may exist
    calls: int


@dataclass(frozen=True)
class SimpleMatches:
    """Distinct simple matches (Theorem 10) and how many (v, restart) runs found each."""

    matches: tuple[SubspaceMatch, ...]
    counts: tuple[int, ...]
    complete: bool  # exhaustive method: every Algorithm 3 finished; random method: False
    method: str
    max_match: MaxMatch = field(repr=False)

    def sizes(self) -> np.ndarray:
        return np.array([m.size for m in self.matches], dtype=int)


@dataclass
class PairResult:
    """s(ε) of one layer for one pair of networks over the repeats, and simple matches.

    ``similarity`` is ``[repeats, len(eps)]``; ``match_x``/``match_y`` are the maximum matches
    as boolean masks ``[repeats, len(eps), n]`` over all units (dropped ones False);
    ``dropped_*`` count zero vectors per repeat; ``simple`` maps ε to ``(x, y, counts)`` with
    ``x`` ``[m, n_x]`` and ``y`` ``[m, n_y]`` boolean, one row per distinct simple match found
    on the first repeat's rows (§5.2), and ``counts`` how many runs found it.
    """

    layer: str
    a: str
    b: str
    kind: str
    n_rows: int
    sample_size: int
    eps: np.ndarray
    similarity: np.ndarray
    match_x: np.ndarray
    match_y: np.ndarray
    dropped_x: np.ndarray
    dropped_y: np.ndarray
    simple: dict = field(default_factory=dict)
    restarts: int = 0
    min_rows_per_unit: float = 0.0  # the threshold the run used; 0 in files written before it

    @property
    def repeats(self) -> int:
        return self.similarity.shape[0]

    @property
    def rows_per_unit(self) -> float:
        """d / (n_x + n_y), live units of the first draw (the one simple matches use)."""
        live = (self.match_x.shape[2] - int(self.dropped_x[0])
                + self.match_y.shape[2] - int(self.dropped_y[0]))
        return self.sample_size / max(live, 1)

    @property
    def undersampled(self) -> bool:
        """Too few rows for subspace matches to mean something (see ``compare_layer``)."""
        return self.rows_per_unit < self.min_rows_per_unit

    def simple_sizes(self, eps: float) -> np.ndarray:
        """|X| + |Y| of each distinct simple match found at ε (Wang Fig. 2)."""
        x, y, _ = self.simple[float(eps)]
        return x.sum(1) + y.sum(1)


def write_pair_result(result: PairResult, path: str | os.PathLike) -> None:
    """HDF5 at ``path``, written atomically (:func:`convergent.outputs.atomic_output`)."""
    import h5py

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        for k in ("layer", "a", "b", "kind", "n_rows", "sample_size", "restarts",
                  "min_rows_per_unit"):
            h5.attrs[k] = getattr(result, k)
        h5.attrs["repeats"] = result.repeats
        for k in ("eps", "similarity", "dropped_x", "dropped_y"):
            h5[k] = getattr(result, k)
        for k in ("match_x", "match_y"):
            h5.create_dataset(k, data=getattr(result, k), compression="gzip")
        g = h5.create_group("simple")
        for i, (ep, (xs, ys, counts)) in enumerate(sorted(result.simple.items())):
            s = g.create_group(str(i))
            s.attrs["eps"] = ep
            s.create_dataset("x", data=xs, compression="gzip")
            s.create_dataset("y", data=ys, compression="gzip")
            s["counts"] = counts


def read_pair_result(path: str | os.PathLike) -> PairResult:
    with open_hdf5(path, "subspace result") as h5:
        at = h5.attrs
        simple = {float(s.attrs["eps"]): (s["x"][()], s["y"][()], s["counts"][()])
                  for s in h5["simple"].values()}
        return PairResult(str(at["layer"]), str(at["a"]), str(at["b"]), str(at["kind"]),
                          int(at["n_rows"]), int(at["sample_size"]), h5["eps"][()],
                          h5["similarity"][()], h5["match_x"][()], h5["match_y"][()],
                          h5["dropped_x"][()], h5["dropped_y"][()], simple,
                          int(at["restarts"]), float(at.get("min_rows_per_unit", 0.0)))


def similarity_frame(results: Iterable[PairResult]):
    """One row per (layer, pair, ε): s(ε) averaged over the repeats and its spread over them;
    ``baseline`` marks pairs whose second network is untrained."""
    import pandas as pd

    rows = []
    for r in results:
        for e, ep in enumerate(r.eps):
            rows.append({"layer": r.layer, "a": r.a, "b": r.b,
                         "baseline": r.b.startswith("untrained"), "eps": float(ep),
                         "s": r.similarity[:, e].mean(), "s_std_repeats": r.similarity[:, e].std(),
                         "d": r.sample_size, "repeats": r.repeats, "units_a": r.match_x.shape[2],
                         "units_b": r.match_y.shape[2], "dead_a": int(r.dropped_x.max()),
                         "dead_b": int(r.dropped_y.max()), "rows_per_unit": r.rows_per_unit,
                         "undersampled": r.undersampled})
    return pd.DataFrame(rows)


def summarize_similarity(frame, layers: Sequence[str]):
    """Per layer and ε: mean and spread of s(ε) over trained pairs and over baseline pairs, and
    the mean spread over conv repeats (Wang Fig. 1 and its table), layers in network order."""
    import pandas as pd

    def agg(g):
        return pd.Series({"pairs": len(g), "s_mean": g["s"].mean(),
                          "s_std_pairs": g["s"].std(ddof=0),
                          "s_std_repeats": g["s_std_repeats"].mean()})

    keys = ["layer", "eps"]
    trained = frame[~frame["baseline"]].groupby(keys).apply(agg, include_groups=False)
    out = trained.reset_index()
    base = frame[frame["baseline"]]
    if len(base):
        b = base.groupby(keys).apply(agg, include_groups=False).reset_index()
        b = b.rename(columns={"pairs": "baseline_pairs", "s_mean": "baseline_mean",
                              "s_std_pairs": "baseline_std_pairs",
                              "s_std_repeats": "baseline_std_repeats"})
        out = out.merge(b, on=keys, how="left")
    first = frame.groupby("layer")[["d", "repeats", "units_a"]].first()
    first = first.join(frame.groupby("layer").agg(rows_per_unit=("rows_per_unit", "min"),
                                                  undersampled=("undersampled", "any")))
    out = out.join(first, on="layer")
    out["pairs"] = out["pairs"].astype(int)
    order = {name: i for i, name in enumerate(layers)}
    return out.sort_values(["layer", "eps"], key=lambda c: c.map(order) if c.name == "layer"
                           else c).reset_index(drop=True)

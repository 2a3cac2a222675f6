"""ε-approximate subspace matches between two sets of neurons (Wang et al. 2018, §2–5).

A neuron is represented by its *activation vector* ``z`` (one column of an activation matrix:
rows are the ``d`` paired inputs, columns the neurons). Subsets ``X`` of one network and ``Y``
of the other form an ε-approximate match (Definition 1) when every ``x`` in ``X`` satisfies
``dist(z_x, span(z_Y)) <= ε |z_x|`` and every ``y`` in ``Y`` likewise against ``span(z_X)``:
the distance is *relative* (the sine of the angle between a vector and a subspace), so ε is
scale-free. Matches are closed under union (Lemma 2), so there is a unique maximum match
(Algorithm 1); the finest matches are the simple matches, which are exactly the v-minimal
matches over all neurons v (Theorem 10; Algorithm 2 finds one, Algorithm 3 all of them).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> shared = rng.standard_normal((200, 2))             # a 2-d subspace both nets represent
>>> X = np.c_[shared @ [[1, 1], [1, -1]], rng.standard_normal(200)]   # + one private unit
>>> Y = np.c_[shared, rng.standard_normal(200)]
>>> m = max_match(X, Y, eps=0.2)
>>> m.x, m.y, m.similarity
((0, 1), (0, 1), 0.6666666666666666)
>>> [(s.x, s.y) for s in simple_matches(X, Y, eps=0.2, method="exhaustive").matches]
[((0, 1), (0, 1))]

Conventions
-----------
* ``X`` is ``[d, n_x]``, ``Y`` is ``[d, n_y]``. Vectors are **not** centered (as the paper).
  Columns that are exactly zero (dead ReLUs) would match anything (``dist(0, S) = 0``); they
  are dropped before anything else and reported (``dropped_x``, ``dropped_y``), and s(ε) is
  taken over the live neurons. Results always use the original column indices.
* A neuron is named ``("x", i)`` or ``("y", j)``.
* s(ε) = (|X*| + |Y*|) / (|𝒳| + |𝒴|) (§5.1).

Fast core
---------
Everything works on the Gram matrix ``G = ZᵀZ`` of ``Z = [X Y]`` in float64 with the columns
scaled to unit norm (spans and relative distances do not change, and unit diagonals make ``G``
as well conditioned as a diagonal scaling can). ``dist²(z, span(Z_S)) / |z|² = 1 - G_zS G_SS⁺
G_Sz``, so after one ``O(d n²)`` product the cost depends on the number of neurons only.
Algorithm 1 solves with a Cholesky factor of ``G_SS`` per pass, or, where that is singular or
its error bound exceeds the tolerance, an eigendecomposition (a pseudo-inverse, so dependent
neurons are fine). Algorithm 2 runs many nested Algorithm-1 calls that each start from the
current match minus one neuron; a removal only shrinks spans, so it is a rank-one downdate of
``G_BB⁻¹`` (B: a basis of the current set, picked by pivoted Cholesky) and of every projection
(``O(n²)``), and each nested call is the cascade of such downdates until nothing violates the
threshold (the same greatest fixed point Algorithm 1 reaches in any removal order). When the
removed neuron was in the basis, a dependent member with a component along the lost direction
replaces it (a rank-one update), so dependent neurons (d < n, duplicates) need no special path.
Simple matches (Algorithm 2 for every neuron of the maximum match, §5.2) mostly need no search
at all: a candidate is proved to be a run's result from the single-removal cascades of the
maximum match, and the rest are searched lazily on a state that shrinks with the match
(:mod:`convergent.subspace_simple`; on CUDA, as one batched tensor program,
:mod:`convergent._subspace_batched`). Every path returns the same sets.

Tolerance
---------
A neuron passes when ``dist²/|z|² <= ε² + atol`` (``atol = DEFAULT_ATOL = 1e-10``), in the fast
core and in the least-squares reference alike; with ``ε = 0`` this makes "exact" mean "exact to
float64 Gram precision". Gram-based residuals carry an absolute error of about ``1e-16 κ(G_SS)``,
so a decision whose squared relative distance lies within ~1e-9 of ``ε²`` may differ from the
least-squares reference; so may spans of nearly dependent neurons, whose directions below Gram
precision are treated as absent (Algorithm 1: eigenvalues below ``RANK_RTOL`` of the largest;
Algorithm 2's bases: squared distances below ``RANK_TOL``). Away from those the sets are
identical (the tests check this on inputs whose every decision is at least 1e-6 from the
threshold, including exactly dependent neurons).
"""

from __future__ import annotations

import itertools
import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from convergent.device import resolve_device
from convergent.subspace_simple import RANK_TOL  # noqa: F401 (Algorithm 2's bases; re-exported)
from convergent.subspace_simple import progress_callback as _progress_callback


class _LazyTorch:
    """``torch``, imported on first use: the figure and table steps import this module only to
    read result files and should not pay seconds of ``import torch`` per job."""

    def __getattr__(self, name):
        import torch as module

        globals()["torch"] = module
        return getattr(module, name)


torch = _LazyTorch()

__all__ = [
    "DEFAULT_ATOL",
    "EPS_GRID",
    "SubspaceMatch",
    "MaxMatch",
    "MinimalMatches",
    "SimpleMatches",
    "SubspaceProblem",
    "max_match",
    "min_match",
    "all_min_matches",
    "simple_matches",
    "similarity",
    "similarity_curve",
    "planted_pair",
    "sample_rows",
    "PairResult",
    "MIN_ROWS_PER_UNIT",
    "UndersampledWarning",
    "compare_layer",
    "sample_size_curve",
    "write_pair_result",
    "read_pair_result",
    "similarity_frame",
    "summarize_similarity",
]

DEFAULT_ATOL = 1e-10
#: eigenvalues of a unit-diagonal Gram block below this fraction of the largest are treated as 0
RANK_RTOL = 1e-12
#: the ε grid of the authors' code
EPS_GRID = (0.15, 0.2, 0.25, 0.3, 0.5)

Neuron = tuple  # ("x", i) or ("y", j)


def _device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when there is a GPU, else the CPU (:func:`convergent.device.resolve_device`);
    a ``torch.device`` or a string like ``"cuda:1"`` is taken as given."""
    if isinstance(device, str) and device in ("auto", "cpu", "cuda"):
        return torch.device(resolve_device(device))
    return torch.device(device)


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


class SubspaceProblem:
    """Two activation matrices prepared once (Gram matrix, dropped zero vectors) for any number
    of queries at any ε.

    >>> import numpy as np
    >>> Z = np.random.default_rng(1).standard_normal((50, 3))
    >>> p = SubspaceProblem(Z, Z[:, ::-1].copy())      # identical units, permuted
    >>> p.max_match(0.0).similarity, p.min_match(("x", 0), 0.0)
    (1.0, SubspaceMatch(x=(0,), y=(2,)))
    """

    def __init__(self, X, Y, *, device: str | torch.device = "auto", atol: float = DEFAULT_ATOL):
        X = torch.as_tensor(np.asarray(X)) if not torch.is_tensor(X) else X
        Y = torch.as_tensor(np.asarray(Y)) if not torch.is_tensor(Y) else Y
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"X and Y must be [d, n_x] and [d, n_y] with the same d, got "
                             f"{tuple(X.shape)} and {tuple(Y.shape)}")
        dev = _device(device)
        Z = torch.cat([X.to(dev, torch.float64), Y.to(dev, torch.float64)], dim=1)
        self._setup(Z.T @ Z, X.shape[1], dev, atol)

    @classmethod
    def from_gram(cls, G, n_x: int, *, device: str | torch.device = "auto",
                  atol: float = DEFAULT_ATOL) -> "SubspaceProblem":
        """From a precomputed Gram matrix of ``[X Y]`` (e.g. accumulated over chunks of rows)."""
        self = cls.__new__(cls)
        dev = _device(device)
        G = torch.as_tensor(np.asarray(G)) if not torch.is_tensor(G) else G
        self._setup(G.to(dev, torch.float64), n_x, dev, atol)
        return self

    def _setup(self, G: torch.Tensor, n_x: int, dev: torch.device, atol: float) -> None:
        self.device = dev
        self.atol = float(atol)
        self.n_x_all, self.n_y_all = n_x, G.shape[0] - n_x
        diag = torch.diagonal(G).clone()
        live = (diag > 0).cpu().numpy()
        idx = np.flatnonzero(live)
        self.live_x = idx[idx < n_x]
        self.live_y = idx[idx >= n_x] - n_x
        self.dropped_x = tuple(int(i) for i in np.flatnonzero(~live[:n_x]))
        self.dropped_y = tuple(int(j) for j in np.flatnonzero(~live[n_x:]))
        self.nx, self.ny = len(self.live_x), len(self.live_y)
        it = torch.as_tensor(idx, device=dev)
        G = G[it][:, it]
        s = torch.sqrt(torch.diagonal(G))
        G = G / s[:, None] / s[None, :]
        G.fill_diagonal_(1.0)
        self.G = G
        self.Gxx = G[: self.nx, : self.nx]
        self.Gyy = G[self.nx:, self.nx:]
        self.Gxy = G[: self.nx, self.nx:].contiguous()
        self.Gyx = self.Gxy.T.contiguous()
        self._max_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self.last_engine_stats = None  # what the last simple-match search did (RunStats)

    # ---- naming -------------------------------------------------------------------------
    def _internal(self, v: Neuron) -> int | None:
        """Internal id (X live columns, then Y live columns) of an original neuron name."""
        side, k = v
        if side not in ("x", "y"):
            raise ValueError(f"a neuron is ('x', i) or ('y', j), got {v!r}")
        live, off = (self.live_x, 0) if side == "x" else (self.live_y, self.nx)
        if not 0 <= k < (self.n_x_all if side == "x" else self.n_y_all):
            raise IndexError(f"no neuron {v!r}: X has {self.n_x_all}, Y {self.n_y_all} columns")
        hit = np.flatnonzero(live == k)
        return int(hit[0]) + off if len(hit) else None

    def _to_match(self, xm: np.ndarray, ym: np.ndarray) -> SubspaceMatch:
        return SubspaceMatch(tuple(int(i) for i in self.live_x[xm]),
                             tuple(int(j) for j in self.live_y[ym]))

    def _order(self, order, seed) -> list[int]:
        n = self.nx + self.ny
        if isinstance(order, str) and order == "index":
            return list(range(n))
        if isinstance(order, str) and order == "random":
            return list(np.random.default_rng(seed).permutation(n))
        out = [self._internal(u) for u in order]
        return [u for u in out if u is not None]

    @staticmethod
    def _check_eps(eps: float) -> float:
        if not 0 <= eps < 1:
            raise ValueError(f"eps must be in [0, 1), got {eps}")
        return float(eps)

    # ---- Algorithm 1 --------------------------------------------------------------------
    def _residuals(self, src: np.ndarray, span: np.ndarray) -> torch.Tensor:
        """dist²(z_s, span(z_span)) / |z_s|² for internal ids ``src``, pseudo-inverse on span."""
        if len(src) == 0:
            return torch.zeros(0, dtype=torch.float64, device=self.device)
        if len(span) == 0:
            return torch.ones(len(src), dtype=torch.float64, device=self.device)
        sp = torch.as_tensor(span, device=self.device)
        S = self.G[sp][:, sp]
        C = self.G[sp][:, torch.as_tensor(src, device=self.device)]
        L, info = torch.linalg.cholesky_ex(S)
        if int(info) == 0:  # ~10x cheaper than eigh; kept when its rounding error is small
            W = torch.linalg.solve_triangular(L, C, upper=False)
            coef = torch.linalg.solve_triangular(L.T, W, upper=True)
            # backward-stable Cholesky: |error of q| <~ eps_machine * |S| * |S⁻¹ c|²
            err = torch.finfo(S.dtype).eps * torch.linalg.matrix_norm(S) * (coef * coef).sum(0)
            if float(err.max()) < self.atol:
                return 1.0 - (W * W).sum(0)
        w, V = torch.linalg.eigh(S)
        keep = w > RANK_RTOL * w[-1]
        P = V[:, keep].T @ C
        return 1.0 - (P * P / w[keep, None]).sum(0)

    def _max_match_masks(self, eps: float, xm: np.ndarray | None = None,
                         ym: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Algorithm 1 on the universe given by boolean masks over live X and Y neurons."""
        thr = eps * eps + self.atol
        xm = np.ones(self.nx, bool) if xm is None else xm.copy()
        ym = np.ones(self.ny, bool) if ym is None else ym.copy()
        first = True
        while True:
            xi, yi = np.flatnonzero(xm), np.flatnonzero(ym) + self.nx
            drop = (self._residuals(xi, yi) > thr).cpu().numpy()
            xm[xi[drop]] = False
            if not (drop.any() or first):
                break
            first = False
            xi = np.flatnonzero(xm)
            drop = (self._residuals(yi, xi) > thr).cpu().numpy()
            ym[yi[drop] - self.nx] = False
            if not drop.any():
                break
        return xm, ym

    def _max_masks_cached(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
        if eps not in self._max_cache:
            # the maximum match at a larger ε contains this one, and Algorithm 1 started from
            # any superset of the maximum match ends at it: start from the nearest larger ε
            larger = [e for e in self._max_cache if e > eps]
            start = self._max_cache[min(larger)] if larger else (None, None)
            self._max_cache[eps] = self._max_match_masks(eps, *start)
        return self._max_cache[eps]

    def max_match(self, eps: float) -> MaxMatch:
        """Algorithm 1: the maximum ε-approximate match (Definition 3, Theorem 11)."""
        xm, ym = self._max_masks_cached(self._check_eps(eps))
        return MaxMatch(self._to_match(xm, ym), self.nx, self.ny, self.dropped_x, self.dropped_y)

    def similarity(self, eps: float) -> float:
        """Maximum matching similarity s(ε) (Wang §5.1)."""
        return self.max_match(eps).similarity

    def similarity_curve(self, eps_grid: Iterable[float] = EPS_GRID) -> np.ndarray:
        """s(ε) for each ε of the grid (computed from the largest ε down, reusing each result)."""
        grid = [self._check_eps(e) for e in eps_grid]
        for e in sorted(set(grid), reverse=True):
            self._max_masks_cached(e)
        return np.array([self.similarity(e) for e in grid])

    # ---- Algorithm 2 --------------------------------------------------------------------
    def _alg2(self, eps: float, base: tuple[np.ndarray, np.ndarray], vs: Sequence[int],
              orders: Sequence[Sequence[int]], *, prove: bool = True, batched: bool | None = None,
              progress=None) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Algorithm 2 for each (v, order) (internal ids) from the maximum match ``base`` of the
        universe: boolean masks over live X and Y, or None ("failure"). Runs the kill-set proof
        settles cost nothing more; the others are searched one by one on the CPU, or together
        as one batched tensor program (``batched``, default on CUDA; the same sets either way,
        :mod:`convergent.subspace_simple`)."""
        from convergent.subspace_simple import SimpleMatchEngine, single_threaded

        if batched is None:
            batched = self.device.type == "cuda"
        with single_threaded():
            engine = SimpleMatchEngine(self, eps, base)
            if not batched:
                out = engine.run_many(vs, orders, prove=prove, progress=progress)
                self.last_engine_stats = engine.stats
                return out
            out, rest = engine.settle(vs, orders, prove=prove, progress=progress)
            self.last_engine_stats = engine.stats
            if rest:
                from convergent._subspace_batched import batched_alg2

                for k, masks in zip(rest, batched_alg2(self, eps, base, [vs[k] for k in rest],
                                                       [orders[k] for k in rest])):
                    out[k] = masks
                if progress is not None:
                    progress(len(vs), len(vs))
        return out

    def min_match(self, v: Neuron, eps: float, *, order="index", seed=None) -> SubspaceMatch | None:
        """Algorithm 2: one v-minimal match (Theorem 12), or ``None`` if v is in no match.

        ``order``: ``"index"`` (X's columns then Y's), ``"random"`` (a permutation drawn from
        ``seed``), or an explicit sequence of neurons. With ε = 0 and linearly independent
        vectors the result is the unique v-minimum match whatever the order.
        """
        return self.min_matches([v], eps, order=order, seed=seed)[0]

    def _names(self, vs: Sequence[Neuron] | None) -> list[Neuron]:
        if vs is None:
            return [("x", int(i)) for i in self.live_x] + [("y", int(j)) for j in self.live_y]
        return list(vs)

    def _runs(self, vs, order, seed, restarts) -> list[tuple[int, int, list[int]]]:
        """(output slot, internal id, pick order) of each run, restart-major; each random run
        draws its own permutation from one generator seeded by ``seed``."""
        vs = self._names(vs)
        ids = [self._internal(v) for v in vs]
        n = self.nx + self.ny
        rng = np.random.default_rng(seed)
        random = isinstance(order, str) and order == "random"
        fixed = None if random else self._order(order, seed)
        runs = []
        for r in range(restarts):
            for k, i in enumerate(ids):
                if i is not None:
                    runs.append((r * len(vs) + k, i, list(rng.permutation(n)) if random else fixed))
        return runs

    def min_matches(self, vs: Sequence[Neuron] | None, eps: float, *, order="random",
                    seed=None, restarts: int = 1, progress=None) -> list[SubspaceMatch | None]:
        """Algorithm 2 for many neurons at once, ``restarts`` runs per neuron.

        ``vs=None`` means every live neuron. With ``order="random"`` each run draws its own
        permutation from one generator seeded by ``seed``; results are listed restart-major.
        ``progress``: None, True (a tqdm bar) or ``callable(done, total)`` as runs finish.
        """
        eps = self._check_eps(eps)
        runs = self._runs(vs, order, seed, restarts)
        res = self._alg2(eps, self._max_masks_cached(eps), [i for _, i, _ in runs],
                         [o for _, _, o in runs], prove=len(runs) > 1,
                         progress=_progress_callback(progress, "Algorithm 2 runs"))
        out: list = [None] * (len(self._names(vs)) * restarts)
        for (slot, _, _), masks in zip(runs, res):
            out[slot] = None if masks is None else self._to_match(*masks)
        return out

    # ---- Algorithm 3 --------------------------------------------------------------------
    def all_min_matches(self, v: Neuron, eps: float, *, budget: int = 1000, order="index",
                        seed=None) -> MinimalMatches:
        """Algorithm 3: every v-minimal match of ``v`` (Theorem 13).

        Each new match is searched for after deleting one neuron of every match found so far
        (all combinations, in order); the search is exponential in the number of v-minimal
        matches, so it stops after ``budget`` calls of Algorithm 2 and says so
        (``complete=False``).
        """
        eps = self._check_eps(eps)
        vi = self._internal(v)
        if vi is None:
            return MinimalMatches(v, (), True, 0)
        ordr = self._order(order, seed)
        found: list[tuple[np.ndarray, np.ndarray]] = []
        tried: set[frozenset] = set()
        calls = 0
        while True:
            members = [list(np.flatnonzero(np.r_[xm, ym])) for xm, ym in found]
            new = None
            for tup in itertools.product(*members):
                R = frozenset(int(u) for u in tup)
                if R in tried:  # min_match is deterministic in its universe
                    continue
                tried.add(R)
                if vi in R:  # v deleted: "failure" without a call
                    continue
                if calls >= budget:
                    return MinimalMatches(v, tuple(self._to_match(*m) for m in found), False,
                                          calls)
                calls += 1
                ux = np.ones(self.nx, bool)
                uy = np.ones(self.ny, bool)
                for u in R:
                    if u < self.nx:
                        ux[u] = False
                    else:
                        uy[u - self.nx] = False
                base = self._max_match_masks(eps, ux, uy) if R else self._max_masks_cached(eps)
                res = self._alg2(eps, base, [vi], [ordr], prove=False)[0]
                if res is not None:
                    new = res
                    break
            if new is None:
                return MinimalMatches(v, tuple(self._to_match(*m) for m in found), True, calls)
            found.append(new)

    def simple_matches(self, eps: float, *, method: str = "random", restarts: int = 1,
                       seed=0, budget: int = 1000, progress=None) -> SimpleMatches:
        """All simple matches (Theorem 10: the v-minimal matches over all v, de-duplicated).

        ``method="random"`` is §5.2's estimate: randomized Algorithm 2, ``restarts`` runs per
        neuron of the maximum match. ``method="exhaustive"`` runs Algorithm 3 for every neuron
        (``budget`` Algorithm-2 calls per neuron; ``complete`` says whether all finished).
        ``progress``: None, True (a tqdm bar) or ``callable(done, total)``, counted in runs
        (random) or neurons (exhaustive).
        """
        eps = self._check_eps(eps)
        mm = self.max_match(eps)
        vs = mm.match.neurons()
        counts: dict[SubspaceMatch, int] = {}
        complete = False
        if method == "random":
            for m in self.min_matches(vs, eps, order="random", seed=seed, restarts=restarts,
                                      progress=progress):
                if m is not None:
                    counts[m] = counts.get(m, 0) + 1
        elif method == "exhaustive":
            complete = True
            report = _progress_callback(progress, "Algorithm 3 neurons")
            for k, v in enumerate(vs):
                r = self.all_min_matches(v, eps, budget=budget)
                complete &= r.complete
                for m in r.matches:
                    counts[m] = counts.get(m, 0) + 1
                if report is not None:
                    report(k + 1, len(vs))
        else:
            raise ValueError(f"method is 'random' or 'exhaustive', got {method!r}")
        ms = sorted(counts, key=lambda m: (m.size, m.x, m.y))
        return SimpleMatches(tuple(ms), tuple(counts[m] for m in ms), complete, method, mm)


# ---- one-call functions -------------------------------------------------------------------
def max_match(X, Y, eps: float, *, device="auto", atol: float = DEFAULT_ATOL) -> MaxMatch:
    """Algorithm 1: the maximum ε-approximate match of the columns of X and Y (Wang §4)."""
    return SubspaceProblem(X, Y, device=device, atol=atol).max_match(eps)


def similarity(X, Y, eps: float, *, device="auto", atol: float = DEFAULT_ATOL) -> float:
    """Maximum matching similarity s(ε) = (|X*|+|Y*|)/(|𝒳|+|𝒴|) (Wang §5.1)."""
    return max_match(X, Y, eps, device=device, atol=atol).similarity


def similarity_curve(X, Y, eps_grid: Iterable[float] = EPS_GRID, *, device="auto",
                     atol: float = DEFAULT_ATOL) -> np.ndarray:
    """s(ε) over a grid of ε (default: the authors' grid)."""
    return SubspaceProblem(X, Y, device=device, atol=atol).similarity_curve(eps_grid)


def min_match(X, Y, v: Neuron, eps: float, *, order="index", seed=None, device="auto",
              atol: float = DEFAULT_ATOL) -> SubspaceMatch | None:
    """Algorithm 2: one v-minimal match of neuron ``v`` (``("x", i)``/``("y", j)``), or None."""
    return SubspaceProblem(X, Y, device=device, atol=atol).min_match(v, eps, order=order,
                                                                     seed=seed)


def all_min_matches(X, Y, v: Neuron, eps: float, *, budget: int = 1000, order="index",
                    seed=None, device="auto", atol: float = DEFAULT_ATOL) -> MinimalMatches:
    """Algorithm 3: every v-minimal match, stopping after ``budget`` Algorithm-2 calls."""
    return SubspaceProblem(X, Y, device=device, atol=atol).all_min_matches(
        v, eps, budget=budget, order=order, seed=seed)


def simple_matches(X, Y, eps: float, *, method: str = "random", restarts: int = 1, seed=0,
                   budget: int = 1000, device="auto", atol: float = DEFAULT_ATOL) -> SimpleMatches:
    """Simple matches (Theorem 10), randomized (§5.2) or exhaustive (Algorithm 3)."""
    return SubspaceProblem(X, Y, device=device, atol=atol).simple_matches(
        eps, method=method, restarts=restarts, seed=seed, budget=budget)


# ---- synthetic data with known answers ----------------------------------------------------
def _block_mixing(k: int) -> np.ndarray:
    """An orthogonal k×k matrix whose entries all have |h| >= 1/3 (k <= 6): Y's neurons are
    these combinations of X's, so each y is |h_ij| away from X minus x_i and no smaller pair of
    subsets matches while ε < min |h_ij|."""
    if k == 1:
        return np.ones((1, 1))
    if k == 2:
        return np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2)
    return np.eye(k) - 2.0 / k


def planted_pair(d: int, blocks: Sequence[int], *, private_x: int = 0, private_y: int = 0,
                 broken: Sequence[int] = (), noise=0.01, seed=0):
    """Two activation matrices with planted shared subspaces (for tests, benchmarks and sanity
    checks of the pipeline).

    Each size ``k`` in ``blocks`` is a k-dimensional subspace spanned by k neurons of X
    (orthonormal) and by k neurons of Y (mixed by :func:`_block_mixing`): for
    ``noise`` well below ε and ε below ``eps_max`` these blocks are exactly the simple matches
    and their union is the maximum match. ``broken`` blocks give X all k neurons but Y only
    k-1, so they match nothing. ``private_*`` neurons lie in directions the other net lacks.
    Every neuron gets independent noise of relative size ``noise`` (a float, or one value per
    block, then blocks whose noise exceeds ε break up with cascades) and a random scale;
    columns are shuffled. Returns ``X, Y, planted`` where ``planted`` is a dict with
    ``matches`` (list of :class:`SubspaceMatch`) and ``eps_max``.
    """
    rng = np.random.default_rng(seed)
    blocks, broken = list(blocks), list(broken)
    if any(k > 6 for k in blocks + broken):
        raise ValueError("block sizes up to 6 keep every mixing entry >= 1/3")
    noise = np.broadcast_to(np.asarray(noise, dtype=float), (len(blocks),))
    dims = sum(blocks) + sum(broken) + private_x + private_y
    if dims > d:
        raise ValueError(f"{dims} planted directions do not fit in d={d}")
    basis = np.linalg.qr(rng.standard_normal((d, dims)))[0]
    xs, ys, xb, yb, eta = [], [], [], [], []
    col = 0
    for b, k in enumerate(blocks + broken):
        B = basis[:, col:col + k]
        col += k
        H = _block_mixing(k)
        xs.append(B)
        ys.append((B @ H)[:, : k if b < len(blocks) else k - 1])
        xb += [b] * k
        yb += [b] * ys[-1].shape[1]
        eta += [noise[b] if b < len(blocks) else noise.max(initial=0.0)] * k
    xs.append(basis[:, col:col + private_x])
    ys.append(basis[:, col + private_x:col + private_x + private_y])
    X, Y = np.concatenate(xs, 1), np.concatenate(ys, 1)
    xb += [-1] * private_x
    yb += [-1] * private_y

    def noisy(Z, blk):
        level = np.array([noise[b] if 0 <= b < len(blocks) else noise.max(initial=0.0)
                          for b in blk])
        E = rng.standard_normal(Z.shape)
        E *= level / np.linalg.norm(E, axis=0)
        Z = (Z + E) * rng.uniform(0.5, 2.0, Z.shape[1])
        perm = rng.permutation(Z.shape[1])
        return Z[:, perm], np.asarray(blk)[perm]

    X, xb = noisy(X, xb)
    Y, yb = noisy(Y, yb)
    matches = [SubspaceMatch(tuple(int(i) for i in np.flatnonzero(xb == b)),
                             tuple(int(j) for j in np.flatnonzero(yb == b)))
               for b in range(len(blocks))]
    eps_max = min((np.abs(_block_mixing(k)).min() for k in blocks + broken), default=1.0)
    return X, Y, {"matches": matches, "eps_max": float(eps_max)}


# ---- one layer of two networks, as the pipeline runs it (Wang §5) -------------------------
def sample_rows(n_rows: int, size: int | None, repeats: int, seed: int, layer: str
                ) -> list[np.ndarray | None]:
    """Rows of each repeat: ``repeats`` sorted draws of ``size`` rows without replacement, a
    function of the layer's name and ``seed`` only, so every pair of networks sees the same
    rows. ``None`` (one repeat of all rows) when ``size`` is None or covers every row.

    >>> [len(r) for r in sample_rows(10, 3, 2, seed=0, layer="conv1")], sample_rows(10, 20, 2, 0, "fc")
    ([3, 3], [None])
    """
    if size is None or size >= n_rows:
        return [None]
    rng = np.random.default_rng([seed, zlib.crc32(layer.encode())])
    return [np.sort(rng.choice(n_rows, size=size, replace=False)) for _ in range(repeats)]


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


#: subspace matches need d well above n_x + n_y rows: below this many rows per live unit s(ε)
#: is inflated by the sample (docs/subspace.md, "How many rows"), so the result is flagged and
#: simple matches are not searched
MIN_ROWS_PER_UNIT = 8.0


def compare_layer(X, Y, *, layer: str, a: str = "a", b: str = "b", kind: str = "conv",
                  eps_grid: Sequence[float] = EPS_GRID, sample_size: int | None = 10_000,
                  repeats: int = 16, seed: int = 0, simple_eps: Sequence[float] = (),
                  restarts: int = 1, min_rows_per_unit: float = MIN_ROWS_PER_UNIT,
                  device="auto", atol: float = DEFAULT_ATOL, progress=None) -> PairResult:
    """Wang §5 for one layer of two networks: s(ε) over the grid, averaged over ``repeats``
    draws of ``sample_size`` rows for conv layers (all rows for fc layers, or when there are
    fewer), and simple matches by randomized Algorithm 2 (``restarts`` runs per neuron, §5.2)
    on the first draw for each ε in ``simple_eps``.

    With d rows and n_x + n_y live units, spans of that many vectors in a space of barely more
    dimensions match almost anything: below ``min_rows_per_unit`` rows per unit the result is
    flagged (``PairResult.undersampled``), a warning says so, and simple matches are skipped.

    ``X``/``Y``: ``[n_rows, n_units]`` activations with paired rows (all positions of a conv
    layer as rows). ``progress``: None, True (tqdm bars) or ``callable(stage, done, total)``,
    called as repeats and Algorithm-2 runs finish.
    """
    X, Y = np.asarray(X), np.asarray(Y)
    eps = np.asarray([float(e) for e in eps_grid])
    draws = sample_rows(len(X), None if kind == "fc" else sample_size, repeats, seed, layer)
    sim = np.zeros((len(draws), len(eps)))
    mx = np.zeros((len(draws), len(eps), X.shape[1]), bool)
    my = np.zeros((len(draws), len(eps), Y.shape[1]), bool)
    dx = np.zeros(len(draws), int)
    dy = np.zeros(len(draws), int)
    simple = {}
    report = _stage_progress(progress, "s(eps), draws of rows")
    if report is not None:
        report(0, len(draws))
    for r, rows in enumerate(draws):
        P = SubspaceProblem(X if rows is None else X[rows], Y if rows is None else Y[rows],
                            device=device, atol=atol)
        sim[r] = P.similarity_curve(eps)
        for e, ep in enumerate(eps):
            m = P.max_match(ep)
            mx[r, e, list(m.x)] = True
            my[r, e, list(m.y)] = True
        dx[r], dy[r] = len(P.dropped_x), len(P.dropped_y)
        if report is not None:
            report(r + 1, len(draws))
        if r > 0:
            continue
        d = len(X) if rows is None else len(rows)
        if d < min_rows_per_unit * (P.nx + P.ny):
            warnings.warn(
                f"{layer} {a}-{b}: d = {d} rows for {P.nx} + {P.ny} live units "
                f"({d / max(P.nx + P.ny, 1):.1f} per unit, below {min_rows_per_unit:g}): "
                f"s(eps) is inflated by the sample"
                + ("; simple matches skipped" if len(simple_eps) else ""),
                UndersampledWarning, stacklevel=2)
        else:
            for ep in simple_eps:
                size = P.max_match(float(ep)).match.size
                stage = (f"simple matches at eps={float(ep):g}, Algorithm 2 runs ({size} neurons"
                         f" x {restarts} restarts)")
                sm = P.simple_matches(float(ep), restarts=restarts, seed=seed,
                                      progress=_stage_progress(progress, stage))
                xs = np.zeros((len(sm.matches), X.shape[1]), bool)
                ys = np.zeros((len(sm.matches), Y.shape[1]), bool)
                for k, m in enumerate(sm.matches):
                    xs[k, list(m.x)] = True
                    ys[k, list(m.y)] = True
                simple[float(ep)] = (xs, ys, np.asarray(sm.counts, int))
    used = len(X) if draws[0] is None else len(draws[0])
    return PairResult(layer, str(a), str(b), kind, len(X), used, eps, sim, mx, my, dx, dy,
                      simple, restarts, float(min_rows_per_unit))


class UndersampledWarning(UserWarning):
    """Too few rows for the number of units: subspace matches are inflated by the sample."""


def _stage_progress(progress, stage: str):
    """``progress`` of ``compare_layer`` (None, True or ``callable(stage, done, total)``) as
    ``callable(done, total)`` for one stage."""
    if progress is None or progress is False or progress is True:
        return _progress_callback(progress, stage)
    return lambda done, total: progress(stage, done, total)


def sample_size_curve(X, Y, sizes: Sequence[int | None], *, layer: str,
                      eps_grid: Sequence[float] = EPS_GRID, repeats: int = 16, seed: int = 0,
                      device="auto", atol: float = DEFAULT_ATOL, progress=None):
    """s(ε) as the number of rows d grows (``None``: all rows), mean and spread over repeats.

    With d near the number of units, almost any vector is close to the span of the other
    network's units and s(ε) tends to 1 whatever the networks learned; the curve shows from
    which d on s(ε) measures the networks rather than the sample. Returns a DataFrame with
    columns ``d, eps, mean, std, repeats``. ``progress``: None, True (a tqdm bar) or
    ``callable(done, total)``, counted in draws of rows over all sizes.
    """
    import pandas as pd

    X, Y = np.asarray(X), np.asarray(Y)
    out = []
    plan = [sample_rows(len(X), size, repeats, seed, layer) for size in sizes]
    report = _progress_callback(progress, "s(eps) vs d, draws of rows")
    total, done = sum(len(draws) for draws in plan), 0
    if report is not None:
        report(0, total)
    for draws in plan:
        curves = []
        for r in draws:
            curves.append(SubspaceProblem(X if r is None else X[r], Y if r is None else Y[r],
                                          device=device, atol=atol).similarity_curve(eps_grid))
            done += 1
            if report is not None:
                report(done, total)
        s = np.array(curves)
        d = len(X) if draws[0] is None else len(draws[0])
        for e, ep in enumerate(eps_grid):
            out.append({"d": d, "eps": float(ep), "mean": s[:, e].mean(),
                        "std": s[:, e].std(), "repeats": len(draws)})
    return pd.DataFrame(out)


def write_pair_result(result: PairResult, path: str | os.PathLike) -> None:
    """HDF5 at ``path`` (written to a temporary name, then renamed: no partial file is ever
    mistaken for a whole one)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as h5:
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
    os.replace(tmp, path)


def read_pair_result(path: str | os.PathLike) -> PairResult:
    import h5py

    with h5py.File(path, "r") as h5:
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

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

This module holds the algorithms only. The records they return and the pipeline's result files
and tables are in :mod:`convergent.subspace_results` (torch-free), one layer of two networks as
the pipeline compares them (§5) in :mod:`convergent.subspace_layers`, and known answers for
tests (planted matches, the least-squares reference) in :mod:`convergent.subspace_testing`.

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
Simple matches (Algorithm 2 for every neuron of the maximum match, §5.2) often need no search
at all: a candidate is proved to be a run's result from the single-removal cascades of the
maximum match, and the rest are searched lazily on a state that shrinks with the match, trying
chunks of candidates at once and stopping cascades at neurons known to lose v
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
from typing import Iterable, Sequence

import numpy as np
import torch

from convergent.device import resolve_device
from convergent.subspace_results import MaxMatch, MinimalMatches, Neuron, SimpleMatches, SubspaceMatch
from convergent.subspace_simple import RANK_TOL  # noqa: F401 (Algorithm 2's bases; re-exported)
from convergent.subspace_simple import progress_callback as _progress_callback

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
]

DEFAULT_ATOL = 1e-10
#: eigenvalues of a unit-diagonal Gram block below this fraction of the largest are treated as 0
RANK_RTOL = 1e-12
#: the ε grid of the authors' code
EPS_GRID = (0.15, 0.2, 0.25, 0.3, 0.5)


def _device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when there is a GPU, else the CPU (:func:`convergent.device.resolve_device`);
    a ``torch.device`` or a string like ``"cuda:1"`` is taken as given."""
    if isinstance(device, str) and device in ("auto", "cpu", "cuda"):
        return torch.device(resolve_device(device))
    return torch.device(device)


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
              progress=None, workers: int = 1) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Algorithm 2 for each (v, order) (internal ids) from the maximum match ``base`` of the
        universe: boolean masks over live X and Y, or None ("failure"). Runs the kill-set proof
        settles cost nothing more; the others are searched one by one on the CPU, or together
        as one batched tensor program (``batched``, default on CUDA; the same sets either way,
        :mod:`convergent.subspace_simple`); on the CPU, ``workers`` processes share them out."""
        from convergent.subspace_simple import SimpleMatchEngine, single_threaded

        if batched is None:
            batched = self.device.type == "cuda"
        with single_threaded():
            engine = SimpleMatchEngine(self, eps, base)
            if not batched:
                out = engine.run_many(vs, orders, prove=prove, progress=progress, workers=workers)
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
                    seed=None, restarts: int = 1, progress=None, workers: int = 1) -> list[SubspaceMatch | None]:
        """Algorithm 2 for many neurons at once, ``restarts`` runs per neuron.

        ``vs=None`` means every live neuron. With ``order="random"`` each run draws its own
        permutation from one generator seeded by ``seed``; results are listed restart-major.
        ``progress``: None, True (a tqdm bar) or ``callable(done, total)`` as runs finish.
        ``workers``: processes that share the runs searched in full (the same results).
        """
        eps = self._check_eps(eps)
        runs = self._runs(vs, order, seed, restarts)
        res = self._alg2(eps, self._max_masks_cached(eps), [i for _, i, _ in runs],
                         [o for _, _, o in runs], prove=len(runs) > 1,
                         progress=_progress_callback(progress, "Algorithm 2 runs"), workers=workers)
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
                       seed=0, budget: int = 1000, progress=None, workers: int = 1) -> SimpleMatches:
        """All simple matches (Theorem 10: the v-minimal matches over all v, de-duplicated).

        ``method="random"`` is §5.2's estimate: randomized Algorithm 2, ``restarts`` runs per
        neuron of the maximum match. ``method="exhaustive"`` runs Algorithm 3 for every neuron
        (``budget`` Algorithm-2 calls per neuron; ``complete`` says whether all finished).
        ``progress``: None, True (a tqdm bar) or ``callable(done, total)``, counted in runs
        (random) or neurons (exhaustive). ``workers`` (random): processes that share the runs
        searched in full; the same matches for any number.
        """
        eps = self._check_eps(eps)
        mm = self.max_match(eps)
        vs = mm.match.neurons()
        counts: dict[SubspaceMatch, int] = {}
        complete = False
        if method == "random":
            for m in self.min_matches(vs, eps, order="random", seed=seed, restarts=restarts,
                                      progress=progress, workers=workers):
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

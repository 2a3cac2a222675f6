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
Many (v, order) runs are batched into one tensor program, on the GPU when there is one. A trial
that loses v is rolled back; an accepted one is refreshed from ``G`` so rounding does not
accumulate.

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
#: a unit vector closer than this (squared distance) to a span counts as in it (Algorithm 2's bases)
RANK_TOL = 1e-9
#: Algorithm 2 recomputes a run's inverses from G after this many rank-one updates
REFRESH = 16
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
    def _masked_inverse(self, Gss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Batched inverse of the principal blocks of ``Gss`` picked by ``mask`` [B, n],
        embedded in n×n with zeros outside."""
        outer = mask[:, :, None] & mask[:, None, :]
        eye = torch.diag_embed((~mask).to(Gss.dtype))
        A = torch.where(outer, Gss.expand(mask.shape[0], -1, -1), 0.0) + eye
        L, info = torch.linalg.cholesky_ex(A)
        if bool((info != 0).any()):
            raise np.linalg.LinAlgError("Gram block not positive definite")
        return torch.where(outer, torch.cholesky_inverse(L), 0.0)

    def _projections(self, MX, MY):
        """|proj of each y onto span(X_b)|² and of each x onto span(Y_b)| (unit vectors)."""
        q = ((self.Gyx @ MX) * self.Gyx).sum(-1)  # [B, ny]
        p = ((self.Gxy @ MY) * self.Gxy).sum(-1)  # [B, nx]
        return p, q

    def _basis(self, Gss, mask: np.ndarray) -> np.ndarray:
        """Greedy pivoted Cholesky: members of ``mask`` spanning what it spans, each at squared
        distance >= RANK_TOL from the span of those picked before it (unit vectors)."""
        G = Gss.cpu().numpy()
        idx = np.flatnonzero(mask)
        res = np.ones(len(idx))
        L = np.zeros((len(idx), 0))
        basis = np.zeros(len(mask), bool)
        while len(idx):
            k = int(np.argmax(res))
            if res[k] < RANK_TOL:
                break
            col = (G[idx, idx[k]] - L @ L[k]) / np.sqrt(res[k])
            L = np.c_[L, col]
            res = res - col * col
            res[k] = -np.inf
            basis[idx[k]] = True
        return basis

    def _alg2(self, eps: float, base: tuple[np.ndarray, np.ndarray], vs: Sequence[int],
              orders: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Algorithm 2 for each (v, order) from the maximum match ``base`` of the universe."""
        xm, ym = base
        out: list = [None] * len(vs)
        todo = [k for k, v in enumerate(vs)
                if (xm[v] if v < self.nx else ym[v - self.nx])]
        if not todo:
            return out
        # per batch element: two inverses plus their snapshot
        per = 8 * 2 * (self.nx**2 + self.ny**2) + 64 * (self.nx + self.ny)
        budget = (2 << 30) if self.device.type == "cuda" else (256 << 20)
        chunk = max(1, budget // per)
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            # the loop is thousands of small, memory-bound tensor ops: extra intra-op threads
            # only add synchronisation (30x slower on 2 shared, busy cores, measured)
            torch.set_num_threads(1)
        try:
            for s in range(0, len(todo), chunk):
                ks = todo[s:s + chunk]
                res = self._alg2_batch(eps, base, [vs[k] for k in ks], [orders[k] for k in ks])
                for k, r in zip(ks, res):
                    out[k] = r
        finally:
            torch.set_num_threads(threads)
        return out

    def _alg2_batch(self, eps, base, vs, orders):
        dev, nx, ny = self.device, self.nx, self.ny
        n, B = nx + ny, len(vs)
        thr = eps * eps + self.atol
        inX = torch.as_tensor(base[0], device=dev)[None].repeat(B, 1)
        inY = torch.as_tensor(base[1], device=dev)[None].repeat(B, 1)
        bX = torch.as_tensor(self._basis(self.Gxx, base[0]), device=dev)[None].repeat(B, 1)
        bY = torch.as_tensor(self._basis(self.Gyy, base[1]), device=dev)[None].repeat(B, 1)
        MX = self._masked_inverse(self.Gxx, bX[:1]).repeat(B, 1, 1)
        MY = self._masked_inverse(self.Gyy, bY[:1]).repeat(B, 1, 1)
        p, q = self._projections(MX[:1], MY[:1])
        p, q = p.repeat(B, 1), q.repeat(B, 1)
        big = n + 1
        rank = torch.full((B, n), big, dtype=torch.long)
        for b, o in enumerate(orders):
            rank[b, torch.as_tensor(list(o), dtype=torch.long)] = torch.arange(len(o))
        rank = rank.to(dev)
        v = torch.as_tensor(list(vs), device=dev)
        ar = torch.arange(B, device=dev)
        changes = torch.zeros(B, dtype=torch.long, device=dev)  # basis updates since refresh
        checked = torch.zeros(B, n, dtype=torch.bool, device=dev)
        checked[ar, v] = True  # removing v itself can only lose v

        def v_alive():
            return torch.cat([inX, inY], 1)[ar, v]

        neg = torch.tensor(-1.0, dtype=torch.float64, device=dev)

        def drop(mask, u, inS, bS, MS, Gss, Gso, proj):
            """Remove neuron u of one side (S) from the runs in ``mask``; ``proj`` holds the
            squared projections of the other side's neurons onto span(S)."""
            b = torch.nonzero(mask).flatten()
            if b.numel() == 0:
                return
            ub = u[b]
            inS[b, ub] = False
            isb = bS[b, ub]  # a dependent member leaves the span as it was
            b, ub = b[isb], ub[isb]
            if b.numel() == 0:
                return
            m = MS[b, ub]  # row u of G_BB⁻¹
            piv = m.gather(1, ub[:, None])  # 1 / dist²(u, span(B - u))
            r = m @ Gso  # (component of each other-side neuron along the lost direction) √piv
            proj[b] -= r * r / piv
            c = (m @ Gss) ** 2 / piv  # members' squared distance to span(B - u)
            # rank-one downdate of the whole batch in place (zero rows for the other runs):
            # cheaper than gathering and scattering the runs' n×n blocks
            left = torch.zeros(B, MS.shape[1], dtype=MS.dtype, device=dev)
            right = torch.zeros_like(left)
            left[b], right[b] = -m / piv, m
            MS.baddbmm_(left[:, :, None], right[:, None, :])
            MS[b, ub] = 0.0
            MS[b, :, ub] = 0.0
            bS[b, ub] = False
            changes[b] += 1
            c = torch.where(inS[b] & ~bS[b], c, neg)
            cbest, sb = c.max(1)
            add = cbest > RANK_TOL  # a dependent member restores the lost direction
            if bool(add.any()):
                ba, sa = b[add], sb[add]
                g = Gss[:, sa].T  # [ka, n]
                mg = torch.bmm(MS[ba], g[:, :, None]).squeeze(-1)  # G_BB⁻¹ g_Bs
                sigma = 1.0 - (g * mg).sum(1, keepdim=True)  # dist²(s, span(B - u))
                mg[torch.arange(len(ba), device=dev), sa] -= 1.0
                left.zero_()
                right.zero_()
                left[ba], right[ba] = mg / sigma, mg
                MS.baddbmm_(left[:, :, None], right[:, None, :])
                rr = mg @ Gso
                proj[ba] += rr * rr / sigma
                bS[ba, sa] = True

        def drop_x(mask, u):
            drop(mask, u, inX, bX, MX, self.Gxx, self.Gxy, q)

        def drop_y(mask, u):
            drop(mask, u, inY, bY, MY, self.Gyy, self.Gyx, p)

        while True:
            cand = torch.cat([inX, inY], 1) & ~checked
            key = torch.where(cand, rank, big)
            kmin, u = key.min(1)
            act = kmin < big
            if not bool(act.any()):
                break
            checked[ar[act], u[act]] = True
            snap = (MX.clone(), MY.clone(), p.clone(), q.clone(), inX.clone(), inY.clone(),
                    bX.clone(), bY.clone(), changes.clone())
            drop_x(act & (u < nx), u)
            drop_y(act & (u >= nx), (u - nx).clamp(min=0))
            while True:  # the nested Algorithm 1: cascade until nothing violates
                alive = act & v_alive()
                vx = inX & alive[:, None] & (1.0 - p > thr)
                vy = inY & alive[:, None] & (1.0 - q > thr)
                hx, hy = vx.any(1), vy.any(1)
                if not bool(hx.any() or hy.any()):
                    break
                drop_x(hx, torch.where(vx, 1.0 - p, neg).argmax(1))
                drop_y(hy, torch.where(vy, 1.0 - q, neg).argmax(1))
            ok = act & v_alive()
            bad = act & ~ok
            if bool(bad.any()):
                MX[bad], MY[bad] = snap[0][bad], snap[1][bad]
                p[bad], q[bad] = snap[2][bad], snap[3][bad]
                inX[bad], inY[bad] = snap[4][bad], snap[5][bad]
                bX[bad], bY[bad] = snap[6][bad], snap[7][bad]
            # refresh accepted states after REFRESH basis changes, so rounding does not
            # accumulate (an O(n³) refresh per trial would cost more than the trials)
            fresh = ok & (changes >= REFRESH)
            if bool(fresh.any()):
                MX[fresh] = self._masked_inverse(self.Gxx, bX[fresh])
                MY[fresh] = self._masked_inverse(self.Gyy, bY[fresh])
                p[fresh], q[fresh] = self._projections(MX[fresh], MY[fresh])
                changes[fresh] = 0
            changes[bad] = snap[8][bad]
        inX, inY = inX.cpu().numpy(), inY.cpu().numpy()
        return [(inX[b], inY[b]) for b in range(B)]

    def min_match(self, v: Neuron, eps: float, *, order="index", seed=None) -> SubspaceMatch | None:
        """Algorithm 2: one v-minimal match (Theorem 12), or ``None`` if v is in no match.

        ``order``: ``"index"`` (X's columns then Y's), ``"random"`` (a permutation drawn from
        ``seed``), or an explicit sequence of neurons. With ε = 0 and linearly independent
        vectors the result is the unique v-minimum match whatever the order.
        """
        return self.min_matches([v], eps, order=order, seed=seed)[0]

    def min_matches(self, vs: Sequence[Neuron] | None, eps: float, *, order="random",
                    seed=None, restarts: int = 1) -> list[SubspaceMatch | None]:
        """Algorithm 2 for many neurons at once (batched), ``restarts`` runs per neuron.

        ``vs=None`` means every live neuron. With ``order="random"`` each run draws its own
        permutation from one generator seeded by ``seed``; results are listed restart-major.
        """
        eps = self._check_eps(eps)
        if vs is None:
            vs = [("x", int(i)) for i in self.live_x] + [("y", int(j)) for j in self.live_y]
        ids = [self._internal(v) for v in vs]
        n = self.nx + self.ny
        rng = np.random.default_rng(seed)
        random = isinstance(order, str) and order == "random"
        fixed = None if random else self._order(order, seed)
        runs = []  # (output slot, internal id, pick order)
        for r in range(restarts):
            for k, i in enumerate(ids):
                if i is not None:
                    runs.append((r * len(vs) + k, i, list(rng.permutation(n)) if random else fixed))
        res = self._alg2(eps, self._max_masks_cached(eps), [i for _, i, _ in runs],
                         [o for _, _, o in runs])
        out: list = [None] * (len(vs) * restarts)
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
                res = self._alg2(eps, base, [vi], [ordr])[0]
                if res is not None:
                    new = res
                    break
            if new is None:
                return MinimalMatches(v, tuple(self._to_match(*m) for m in found), True, calls)
            found.append(new)

    def simple_matches(self, eps: float, *, method: str = "random", restarts: int = 1,
                       seed=0, budget: int = 1000) -> SimpleMatches:
        """All simple matches (Theorem 10: the v-minimal matches over all v, de-duplicated).

        ``method="random"`` is §5.2's estimate: randomized Algorithm 2, ``restarts`` runs per
        neuron of the maximum match. ``method="exhaustive"`` runs Algorithm 3 for every neuron
        (``budget`` Algorithm-2 calls per neuron; ``complete`` says whether all finished).
        """
        eps = self._check_eps(eps)
        mm = self.max_match(eps)
        vs = mm.match.neurons()
        counts: dict[SubspaceMatch, int] = {}
        complete = False
        if method == "random":
            for m in self.min_matches(vs, eps, order="random", seed=seed, restarts=restarts):
                if m is not None:
                    counts[m] = counts.get(m, 0) + 1
        elif method == "exhaustive":
            complete = True
            for v in vs:
                r = self.all_min_matches(v, eps, budget=budget)
                complete &= r.complete
                for m in r.matches:
                    counts[m] = counts.get(m, 0) + 1
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

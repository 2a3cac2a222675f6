"""Algorithm 2 as one batched tensor program: many (v, order) runs advance in lock-step, each
holding its own inverse Gram matrices, on the GPU when there is one.

This is the engine :meth:`convergent.subspace.SubspaceProblem.min_matches` used before
:mod:`convergent.subspace_simple`; it returns the same sets and stays for two uses: the runs the
kill-set proof does not settle on CUDA (hundreds of runs per kernel pay off there), and the
reference the new engine is tested and benchmarked against (``reference_min_matches``,
``reference_simple_matches`` reproduce the earlier public methods call for call).

Per batch element it keeps two inverses plus a snapshot, updated by rank-one downdates and
rolled back when a trial loses v; a removed basis member is replaced by a dependent member with
a component along the lost direction; accepted states are refreshed from G after ``REFRESH``
basis changes so rounding does not accumulate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from convergent.subspace import RANK_TOL, SimpleMatches, SubspaceMatch

__all__ = ["REFRESH", "batched_alg2", "reference_min_matches", "reference_simple_matches"]

#: Algorithm 2 recomputes a run's inverses from G after this many rank-one updates
REFRESH = 16

def _masked_inverse(P, Gss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Batched inverse of the principal blocks of ``Gss`` picked by ``mask`` [B, n],
    embedded in n×n with zeros outside."""
    outer = mask[:, :, None] & mask[:, None, :]
    eye = torch.diag_embed((~mask).to(Gss.dtype))
    A = torch.where(outer, Gss.expand(mask.shape[0], -1, -1), 0.0) + eye
    L, info = torch.linalg.cholesky_ex(A)
    if bool((info != 0).any()):
        raise np.linalg.LinAlgError("Gram block not positive definite")
    return torch.where(outer, torch.cholesky_inverse(L), 0.0)

def _projections(P, MX, MY):
    """|proj of each y onto span(X_b)|² and of each x onto span(Y_b)| (unit vectors)."""
    q = ((P.Gyx @ MX) * P.Gyx).sum(-1)  # [B, ny]
    p = ((P.Gxy @ MY) * P.Gxy).sum(-1)  # [B, nx]
    return p, q

def _basis(P, Gss, mask: np.ndarray) -> np.ndarray:
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

def batched_alg2(P, eps: float, base: tuple[np.ndarray, np.ndarray], vs: Sequence[int],
          orders: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Algorithm 2 for each (v, order) from the maximum match ``base`` of the universe."""
    xm, ym = base
    out: list = [None] * len(vs)
    todo = [k for k, v in enumerate(vs)
            if (xm[v] if v < P.nx else ym[v - P.nx])]
    if not todo:
        return out
    # per batch element: two inverses plus their snapshot
    per = 8 * 2 * (P.nx**2 + P.ny**2) + 64 * (P.nx + P.ny)
    budget = (2 << 30) if P.device.type == "cuda" else (256 << 20)
    chunk = max(1, budget // per)
    threads = torch.get_num_threads()
    if P.device.type == "cpu":
        # the loop is thousands of small, memory-bound tensor ops: extra intra-op threads
        # only add synchronisation (30x slower on 2 shared, busy cores, measured)
        torch.set_num_threads(1)
    try:
        for s in range(0, len(todo), chunk):
            ks = todo[s:s + chunk]
            res = _batch(P, eps, base, [vs[k] for k in ks], [orders[k] for k in ks])
            for k, r in zip(ks, res):
                out[k] = r
    finally:
        torch.set_num_threads(threads)
    return out

def _batch(P, eps, base, vs, orders):
    dev, nx, ny = P.device, P.nx, P.ny
    n, B = nx + ny, len(vs)
    thr = eps * eps + P.atol
    inX = torch.as_tensor(base[0], device=dev)[None].repeat(B, 1)
    inY = torch.as_tensor(base[1], device=dev)[None].repeat(B, 1)
    bX = torch.as_tensor(_basis(P, P.Gxx, base[0]), device=dev)[None].repeat(B, 1)
    bY = torch.as_tensor(_basis(P, P.Gyy, base[1]), device=dev)[None].repeat(B, 1)
    MX = _masked_inverse(P, P.Gxx, bX[:1]).repeat(B, 1, 1)
    MY = _masked_inverse(P, P.Gyy, bY[:1]).repeat(B, 1, 1)
    p, q = _projections(P, MX[:1], MY[:1])
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
        drop(mask, u, inX, bX, MX, P.Gxx, P.Gxy, q)

    def drop_y(mask, u):
        drop(mask, u, inY, bY, MY, P.Gyy, P.Gyx, p)

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
            MX[fresh] = _masked_inverse(P, P.Gxx, bX[fresh])
            MY[fresh] = _masked_inverse(P, P.Gyy, bY[fresh])
            p[fresh], q[fresh] = _projections(P, MX[fresh], MY[fresh])
            changes[fresh] = 0
        changes[bad] = snap[8][bad]
    inX, inY = inX.cpu().numpy(), inY.cpu().numpy()
    return [(inX[b], inY[b]) for b in range(B)]


def reference_min_matches(P, vs, eps: float, *, order="random", seed=None, restarts: int = 1):
    """``SubspaceProblem.min_matches`` as it was: the same runs (same random orders from the
    same seed), every one through :func:`batched_alg2`."""
    eps = P._check_eps(eps)
    runs = P._runs(vs, order, seed, restarts)
    res = batched_alg2(P, eps, P._max_masks_cached(eps), [i for _, i, _ in runs],
                       [o for _, _, o in runs])
    out: list = [None] * (len(P._names(vs)) * restarts)
    for (slot, _, _), masks in zip(runs, res):
        out[slot] = None if masks is None else P._to_match(*masks)
    return out


def reference_simple_matches(P, eps: float, *, restarts: int = 1, seed=0) -> SimpleMatches:
    """``SubspaceProblem.simple_matches(method="random")`` as it was (the batched engine)."""
    eps = P._check_eps(eps)
    mm = P.max_match(eps)
    counts: dict[SubspaceMatch, int] = {}
    for m in reference_min_matches(P, mm.match.neurons(), eps, order="random", seed=seed,
                                   restarts=restarts):
        if m is not None:
            counts[m] = counts.get(m, 0) + 1
    ms = sorted(counts, key=lambda m: (m.size, m.x, m.y))
    return SimpleMatches(tuple(ms), tuple(counts[m] for m in ms), False, "random", mm)

"""Known answers for Wang et al. 2018's subspace matches: inputs with planted matches, and the
plain least-squares Algorithms 1 and 2 (§2, §4). Used by the tests and benchmarks, never by the
pipeline.

:func:`planted_pair` builds two activation matrices whose simple matches and maximum match are
known by construction.

:func:`reference_max_match` and :func:`reference_min_match` are written straight from the paper's
pseudo-code, one neuron at a time, on the raw activation vectors: ``dist(z, span(Z_S))`` is the
residual of ``numpy.linalg.lstsq(Z_S, z)``, and a neuron is kept when ``dist² / |z|² <= eps² +
atol`` (Definition 1: the distance is relative to the neuron's norm, ``dist <= eps |z|``; the
pseudo-code's "> eps" is shorthand for it). ``atol`` is the same tolerance the fast core uses (see
:mod:`convergent.subspace`, "Tolerance"). They are deliberately slow (one least-squares solve on a
``d``-row matrix per neuron per pass); :mod:`convergent.subspace` must return the same sets.

One departure from the printed Algorithm 1, which is a bug in the pseudo-code, not a choice:
as printed, when the first pass over ``X`` removes nothing the loop ends without ever checking
``Y`` (e.g. ``X = {x}``, ``Y = {y1, y2}`` with ``x`` in ``span(y1, y2)`` but ``y2`` far from
``span(x)`` would return a pair that is not a match). Here the ``Y`` pass always runs in the
first round; afterwards the loop is the printed one.

Neurons are named ``("x", i)`` / ``("y", j)`` with ``i``, ``j`` column indices.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from convergent.subspace import DEFAULT_ATOL
from convergent.subspace_results import SubspaceMatch

__all__ = ["planted_pair", "Margin", "reference_max_match", "reference_min_match"]


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


# ---- the least-squares reference ----------------------------------------------------------
class Margin:
    """Records the decision closest to the threshold, |dist²/|z|² - eps²| (tests use it to reject
    inputs where float64 rounding could flip a decision), and counts least-squares solves."""

    def __init__(self) -> None:
        self.closest = np.inf
        self.solves = 0

    def see(self, rel2: float, eps: float) -> None:
        self.closest = min(self.closest, abs(rel2 - eps * eps))
        self.solves += 1


def _close(z: np.ndarray, Z_S: np.ndarray, eps: float, atol: float, margin: Margin | None) -> bool:
    """Is dist(z, span(Z_S)) <= eps |z| (Definition 1)?"""
    if Z_S.shape[1] == 0:
        dist = np.linalg.norm(z)  # span(empty) = {0}
    else:
        coef = np.linalg.lstsq(Z_S, z, rcond=None)[0]
        dist = np.linalg.norm(z - Z_S @ coef)
    rel2 = dist**2 / (z @ z)
    if margin is not None:
        margin.see(rel2, eps)
    return rel2 <= eps * eps + atol


def _check(X, Y, eps):
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError("X and Y must be [d, n_x] and [d, n_y] with the same d")
    if (np.linalg.norm(X, axis=0) == 0).any() or (np.linalg.norm(Y, axis=0) == 0).any():
        raise ValueError("the reference takes no zero activation vectors")
    if not 0 <= eps < 1:
        raise ValueError("eps must be in [0, 1)")
    return X, Y


def _max_match(X, Y, Xs, Ys, eps, atol, margin):
    """Algorithm 1 on the universe (Xs, Ys) (lists of column indices)."""
    Xs, Ys = list(Xs), list(Ys)
    first = True
    changed = True
    while changed:
        changed = False
        for x in list(Xs):  # span(z_Y*) is fixed during this pass
            if not _close(X[:, x], Y[:, Ys], eps, atol, margin):
                Xs.remove(x)
                changed = True
        if changed or first:
            first = False
            changed = False
            for y in list(Ys):
                if not _close(Y[:, y], X[:, Xs], eps, atol, margin):
                    Ys.remove(y)
                    changed = True
    return Xs, Ys


def reference_max_match(X, Y, eps: float, *, atol: float = DEFAULT_ATOL,
                        margin: Margin | None = None) -> SubspaceMatch:
    """Algorithm 1: the maximum eps-approximate match of the columns of ``X`` and ``Y``."""
    X, Y = _check(X, Y, eps)
    Xs, Ys = _max_match(X, Y, range(X.shape[1]), range(Y.shape[1]), eps, atol, margin)
    return SubspaceMatch(tuple(sorted(Xs)), tuple(sorted(Ys)))


def reference_min_match(X, Y, v: tuple[str, int], eps: float, order=None, *,
                        atol: float = DEFAULT_ATOL, margin: Margin | None = None,
                        exclude=()) -> SubspaceMatch | None:
    """Algorithm 2: one v-minimal match, or ``None`` ("failure": v is in no match).

    ``order`` lists the neurons in the order they are picked (line 5); ``None`` is X's columns
    then Y's. ``exclude`` removes neurons from the universe first (Algorithm 3's sub-calls).
    """
    X, Y = _check(X, Y, eps)
    excl = set(exclude)
    Xu = [i for i in range(X.shape[1]) if ("x", i) not in excl]
    Yu = [j for j in range(Y.shape[1]) if ("y", j) not in excl]
    Xv, Yv = _max_match(X, Y, Xu, Yu, eps, atol, margin)
    side, k = v
    if k not in (Xv if side == "x" else Yv):
        return None
    if order is None:
        order = [("x", i) for i in range(X.shape[1])] + [("y", j) for j in range(Y.shape[1])]
    for u in order:  # each neuron is checked at most once, in this order, if still present
        us, uk = u
        if uk not in (Xv if us == "x" else Yv):
            continue
        Xt = [i for i in Xv if not (us == "x" and i == uk)]
        Yt = [j for j in Yv if not (us == "y" and j == uk)]
        Xn, Yn = _max_match(X, Y, Xt, Yt, eps, atol, margin)
        if k in (Xn if side == "x" else Yn):
            Xv, Yv = Xn, Yn
    return SubspaceMatch(tuple(sorted(Xv)), tuple(sorted(Yv)))

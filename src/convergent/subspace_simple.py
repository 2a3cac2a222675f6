"""Simple matches at paper width: exact Algorithm 2 for many (v, order) runs (Wang et al. 2018,
Algorithms 2-3 and the randomized search of §5.2).

:meth:`convergent.subspace.SubspaceProblem.simple_matches` runs Algorithm 2 once per neuron v of
the maximum match M and per restart, each run with its own random order. Every run returns the
same set as the batched engine it replaces (kept as the reference in
:mod:`convergent._subspace_batched`); what changes is how much of the work is done at all.

Greedy view of Algorithm 2
--------------------------
For a run (v, order) write ``gfp(U)`` for the maximum match inside a universe U (Algorithm 1).
A trial removes u from the current match S and keeps ``gfp(S - u)`` when v survives. Because
``gfp`` is monotone (a larger universe has a larger maximum match), the state before any position
of the order is ``gfp(M - A)`` with A the neurons accepted so far, and a rejected u stays in every
later state. So a candidate R is *the* result of the run if and only if

1. R is a match, v is in R and R lies in M, and
2. for every u in R other than v, ``v not in gfp(M - (A_u + u))``, where A_u are the neurons of
   M - R that come before u in the order

(by induction over the order: the neurons outside R are accepted because R itself survives their
removal, and condition 2 is exactly the rejection of the others). Condition 2 holds whenever v is
in ``K(u) = M - gfp(M - u)``, the neurons that removing u *alone* from M takes with it, since a
smaller universe has a smaller maximum match.

Hence the fast path: compute the kill sets K(u) of every u in M once per ε (one cascade each,
shared by every run and restart), join neurons that kill each other into components, take as
candidate for (v, order) the result of Algorithm 2 inside v's component, and accept it when
``v in K(u)`` for all its other members. Where the maximum match is a union of weakly coupled
groups (the planted benchmark layers) this settles every run without a single further trial;
on real activations, whose simple matches are large and overlap, it settles few. The proof
makes a settled answer exact, not an approximation. A component that is itself a match and
that every member's removal wipes out entirely is the answer for each of its members in any
order, without running anything.

Runs the proof does not settle run Algorithm 2 in full (``_Run``, ``_State``), restricted to
the current match S as it shrinks, with lazy trials: a trial's cascade is evaluated as
low-rank corrections to the committed inverse Gram matrices without touching them, so a
rejected trial (every member of the result but v is one) costs no copy and no roll-back, and an
accepted one is committed as one low-rank update. Three things make the full search cheap where
simple matches are large (a trained layer near the output: hundreds of neurons each), and none
changes a trial's outcome, so every run returns the same set as the one-by-one search:

* **Chunks.** A run first accepts hundreds of removals in a row. If v survives the removal of a
  whole chunk C of consecutive candidates, the one-by-one run accepts each of them and reaches
  ``gfp(S - C)`` (gfp(S - C) lies in every intermediate state minus the next candidate), so one
  trial does their work; a chunk that loses v is split in halves, down to single candidates.
* **Known rejections.** Then the run rejects nearly every trial, each after a cascade of ~30
  removals. A cascade that takes a neuron u' whose own trial was rejected earlier in the run
  ends without v (the state holds gfp(S - u) throughout and lies inside the earlier state S'
  minus u', whose maximum match lacks v), so it stops there, rounds early.
* **Block rounds.** A round of a cascade (every violator of one side) leaves the basis as one
  block: one Cholesky factor and one matrix product instead of a downdate and a
  matrix-vector product per neuron.

On a 512 + 512 layer (ResNet-18 ``layer4.1``, |M| = 753 at ε = 0.3, simple matches of ~400
neurons) a run takes ~12x less time than the one-by-one search, with the same sets
(``benchmarks/subspace.py --trained-layer``). On CUDA the unsettled runs go to the batched
tensor program instead (many runs per kernel), which returns the same sets.

Progress: ``progress(done, total)`` is called as runs finish (``SubspaceProblem.simple_matches``
turns it into log lines with a rate and an estimate).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Sequence

import numpy as np
from scipy.linalg import blas, lapack

from convergent.progress import Progress, RateLog, progress_callback  # noqa: F401 (re-exported)

__all__ = ["SimpleMatchEngine", "RunStats", "RateLog", "progress_callback", "single_threaded"]

#: a unit vector closer than this (squared distance) to a span counts as in it (Algorithm 2's
#: bases, here and in the batched engine)
RANK_TOL = 1e-9
#: a run's state is rebuilt from G (fresh basis and inverses, compacted to the current match)
#: when the match has shrunk to SHRINK of the universe it was built on (and by MIN_SHRINK
#: neurons at least), or after REBUILD_UPDATES low-rank updates: rounding in the updates stays
#: bounded, and the cost of every later trial falls with the square of the match. (On a
#: 512-unit layer the projections after 400 updates differed from a fresh state by 1e-9, as
#: much as two fresh states of one match built in different orders do: the rebuilds bound
#: rounding that had not yet grown.)
SHRINK = 0.8
MIN_SHRINK = 16
REBUILD_UPDATES = 256
#: components larger than this are not searched for candidates (their runs rarely verify)
MAX_COMPONENT = 64
#: the most candidates of a run tried together (SimpleMatchEngine._search)
MAX_CHUNK = 64
_OTHER = {"x": "y", "y": "x"}


_CONTROLLER = None


@contextlib.contextmanager
def single_threaded():
    """BLAS and torch on one thread: Algorithm 2 is thousands of small, dependent operations, on
    which extra threads only add synchronisation (dpotrf of 128×128 took 100 ms instead of 0.1 ms
    on 2 busy shared cores, measured)."""
    global _CONTROLLER
    if _CONTROLLER is None:  # finding the loaded BLAS libraries takes ~30 ms: once per process
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        with _CONTROLLER.limit(limits=1, user_api="blas"):
            if torch is not None:
                torch.set_num_threads(1)
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(threads)


def _basis_inverse(Gss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A basis of the span of unit vectors with Gram matrix ``Gss`` (pivoted Cholesky: each
    member at squared distance > RANK_TOL from the span of those before it) and the inverse of
    its Gram matrix, embedded n×n with zeros outside the basis."""
    n = len(Gss)
    basis = np.zeros(n, bool)
    M = np.zeros((n, n))
    if n == 0:
        return basis, M
    c, piv, rank, _ = lapack.dpstrf(Gss, tol=RANK_TOL, lower=1)
    piv = piv[:rank] - 1
    inv, info = lapack.dpotri(c[:rank, :rank], lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("Gram block of a basis is not positive definite")
    inv = np.tril(inv) + np.tril(inv, -1).T
    M[np.ix_(piv, piv)] = inv
    basis[piv] = True
    return basis, M


class _Corrections:
    """One side's low-rank corrections to the committed inverse within a trial:
    ``inverse_now = M - Wᵀ diag(s) W`` over the first ``k`` rows; ``gone``: basis members that
    left. Rows live in one growing array (appending to a list and stacking it for every
    removal made the cost of a long cascade quadratic in its length)."""

    __slots__ = ("W", "s", "k", "gone")

    def __init__(self):
        self.W = self.s = None
        self.k = 0
        self.gone: list = []  # arrays of compact indices

    def add(self, W: np.ndarray, sign: float) -> None:
        need = self.k + len(W)
        if self.W is None:  # most trials end after their first removal: no buffer yet
            self.W, self.s, self.k = W, np.full(len(W), sign), need
            return
        if need > len(self.W):
            cap = max(need, 16, 2 * len(self.W))
            bufs = np.empty((cap, W.shape[1])), np.empty(cap)
            for new, old in zip(bufs, (self.W, self.s)):
                new[:self.k] = old[:self.k]
            self.W, self.s = bufs
        self.W[self.k:need] = W
        self.s[self.k:need] = sign
        self.k = need

    def rows(self, M: np.ndarray, ks) -> np.ndarray:
        """Rows ``ks`` of the corrected inverse (a new array)."""
        out = M[ks]
        if self.k:
            W = self.W[:self.k]
            out -= (W[:, ks].T * self.s[:self.k]) @ W
        return out

    def times(self, M: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The corrected inverse times vector ``g``."""
        out = M @ g
        if self.k:
            W = self.W[:self.k]
            out -= (self.s[:self.k] * (W @ g)) @ W
        return out

    def commit(self, M: np.ndarray) -> None:
        """Apply the corrections to the committed inverse M, in place."""
        W, s = self.W[:self.k], self.s[:self.k]
        # in place on the (symmetric) matrix's Fortran view: no temporary n×n array
        blas.dgemm(-1.0, W.T * s, W, beta=1.0, c=M.T, overwrite_c=True)
        gone = np.concatenate(self.gone)
        M[gone] = 0.0
        M[:, gone] = 0.0


class _Trial:
    """A trial's cascade, evaluated lazily on a state: which neurons left, the other side's
    projections after it, and each side's corrections to its inverse."""

    __slots__ = ("inx", "iny", "bx", "by", "p", "q", "cx", "cy", "ndx", "ndy", "out")

    def __init__(self, st: "_State"):
        self.inx, self.iny = st.inx.copy(), st.iny.copy()
        self.bx, self.by = st.bx.copy(), st.by.copy()
        self.p, self.q = st.p.copy(), st.q.copy()
        self.cx, self.cy = _Corrections(), _Corrections()
        self.ndx, self.ndy = st.ndx, st.ndy  # dependent (non-basis) members per side
        self.out = 0  # members removed


class _State:
    """Algorithm 2's current match S on a compact universe (the match S was when the state was
    built): per side the members, a basis of their span (pivoted Cholesky) with the inverse of
    its Gram matrix, and every neuron's squared projection onto the other side's span (``p``
    for X onto span Y_S, ``q`` for Y onto span X_S; neurons have unit norm, so the squared
    relative distance is ``1 - p``).

    A round of a cascade (every violator of one side) leaves the basis as one block where that
    side has no dependent members (always, once d is well above the units): one Cholesky
    factor of the block of the inverse and one matrix product for the other side's
    projections, instead of a rank-one downdate and a matrix-vector product per neuron. The
    sets are the same; on a trained 512-unit layer, where a rejected trial's cascade removes
    ~30 neurons in ~4 rounds, a trial costs a fraction. With the engine's ``block=False`` the
    rank-one path runs everywhere (the reference the tests compare against)."""

    def __init__(self, eng: "SimpleMatchEngine", xs: np.ndarray, ys: np.ndarray):
        self.eng = eng
        self.xs, self.ys = xs, ys  # compact index -> internal index within X / within Y
        self.Gxx = eng.Gxx[np.ix_(xs, xs)]
        self.Gyy = eng.Gyy[np.ix_(ys, ys)]
        self.Gxy = eng.Gxy[np.ix_(xs, ys)]
        self.Gyx = np.ascontiguousarray(self.Gxy.T)
        self.inx = np.ones(len(xs), bool)
        self.iny = np.ones(len(ys), bool)
        self.bx, self.Mx = _basis_inverse(self.Gxx)
        self.by, self.My = _basis_inverse(self.Gyy)
        self.p = ((self.Gxy @ self.My) * self.Gxy).sum(1)
        self.q = ((self.Gyx @ self.Mx) * self.Gyx).sum(1)
        self.ndx, self.ndy = int((~self.bx).sum()), int((~self.by).sum())
        self.updates = 0
        self.size = self.n = len(xs) + len(ys)

    def copy(self) -> "_State":
        new = object.__new__(_State)
        new.__dict__.update(self.__dict__)
        for k in ("inx", "iny", "bx", "by", "Mx", "My", "p", "q"):
            setattr(new, k, getattr(self, k).copy())
        return new

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """Internal indices of S within X and within Y."""
        return self.xs[self.inx], self.ys[self.iny]

    def compacted(self) -> "_State":
        """The same state restricted to the current members: every later trial costs the square
        of the match, not of the universe. The inverses need no recomputation (rows and columns
        of neurons that left the basis are zero)."""
        kx, ky = np.flatnonzero(self.inx), np.flatnonzero(self.iny)
        new = object.__new__(_State)
        new.__dict__.update(self.__dict__)
        new.xs, new.ys = self.xs[kx], self.ys[ky]
        new.Gxx, new.Gyy = self.Gxx[np.ix_(kx, kx)], self.Gyy[np.ix_(ky, ky)]
        new.Gxy = self.Gxy[np.ix_(kx, ky)]
        new.Gyx = np.ascontiguousarray(new.Gxy.T)
        new.Mx, new.My = self.Mx[np.ix_(kx, kx)], self.My[np.ix_(ky, ky)]
        new.bx, new.by, new.p, new.q = self.bx[kx], self.by[ky], self.p[kx], self.q[ky]
        new.inx, new.iny = np.ones(len(kx), bool), np.ones(len(ky), bool)
        new.size = new.n = len(kx) + len(ky)
        return new

    # ---- a trial, evaluated lazily --------------------------------------------------------
    def _side(self, t: _Trial, side: str):
        """(members, basis, committed inverse, corrections, own Gram, cross Gram to the other
        side, the other side's projections) of one side, for a trial."""
        if side == "x":
            return t.inx, t.bx, self.Mx, t.cx, self.Gxx, self.Gxy, t.q
        return t.iny, t.by, self.My, t.cy, self.Gyy, self.Gyx, t.p

    def _drop(self, t: _Trial, side: str, ks: np.ndarray, watch: int | None) -> bool:
        """Remove members ``ks`` of one side from the trial's match (the other side's
        projections lose the lost directions). ``watch``: a neuron of the other side whose
        projection is checked as it goes; False as soon as it violates (the trial is then
        abandoned half-done)."""
        nd = t.ndx if side == "x" else t.ndy
        if nd or not self.eng.block:
            return self._drop_one_by_one(t, side, ks, watch)
        ins, b, M, corr, _, Gso, proj = self._side(t, side)
        MB = corr.rows(M, ks)
        if len(ks) == 1:
            piv = MB[0, ks[0]]
            if not piv > 0:  # the rank-one path says what is wrong
                return self._drop_one_by_one(t, side, ks, watch)
            W = MB / np.sqrt(piv)
        else:
            c, info = lapack.dpotrf(MB[:, ks], lower=1, clean=1)
            if info != 0:  # rounding at the edge of the basis: one at a time, pivot by pivot
                return self._drop_one_by_one(t, side, ks, watch)
            W = blas.dtrsm(1.0, c, MB, lower=1, overwrite_b=1)
        ins[ks] = False
        b[ks] = False
        t.out += len(ks)
        corr.gone.append(ks)
        corr.add(W, 1.0)
        if watch is not None:  # the one column first: a rejected trial needs no more
            r = W @ Gso[:, watch]
            if proj[watch] - r @ r < 1.0 - self.eng.thr:
                return False
        R = W @ Gso
        proj -= R[0] * R[0] if len(R) == 1 else np.einsum("ij,ij->j", R, R)
        return True

    def _drop_one_by_one(self, t, side, ks, watch) -> bool:
        for k in ks:
            self._remove(t, side, int(k))
            if watch is not None and self._violates(t, side, watch):
                return False
        return True

    def _violates(self, t: _Trial, side: str, watch: int) -> bool:
        """Whether neuron ``watch`` of the side opposite ``side`` violates in the trial."""
        return self._side(t, side)[-1][watch] < 1.0 - self.eng.thr

    def _remove(self, t: _Trial, side: str, k: int) -> None:
        """Remove member k of one side from the trial's match (rank-one correction of that
        side's inverse; the other side's projections lose the lost direction)."""
        ins, b, M, corr, Gss, Gso, proj = self._side(t, side)
        ins[k] = False
        t.out += 1
        if not b[k]:  # a dependent member: the span is unchanged
            if side == "x":
                t.ndx -= 1
            else:
                t.ndy -= 1
            return
        m = corr.rows(M, [k])[0]
        if not m[k] > 0:  # NaN projections would never violate: a wrong set, silently
            raise np.linalg.LinAlgError(
                f"Algorithm 2: the inverse Gram matrix of the current match lost positive "
                f"definiteness (pivot {m[k]:.3g}); its neurons are too close to dependent for "
                f"float64 (raise the rows per unit or drop duplicated units)")
        b[k] = False
        corr.gone.append(np.array([k]))
        w = m / np.sqrt(m[k])
        corr.add(w[None], 1.0)
        r = w @ Gso  # every other-side neuron's component along the lost direction
        proj -= r * r
        if (t.ndx if side == "x" else t.ndy) == 0:
            return
        # a dependent member that restores the lost direction joins the basis
        cand = np.flatnonzero(ins & ~b)
        c = (w @ Gss[:, cand]) ** 2
        j = int(np.argmax(c))
        if c[j] > RANK_TOL:
            s_new = int(cand[j])
            g = Gss[:, s_new] * b  # only basis members carry the inverse
            mg = corr.times(M, g)
            sigma = 1.0 - g @ mg  # its squared distance to the span without k
            mg[s_new] -= 1.0
            w = mg / np.sqrt(sigma)
            corr.add(w[None], -1.0)
            b[s_new] = True
            if side == "x":
                t.ndx -= 1
            else:
                t.ndy -= 1
            r = w @ Gso
            proj += r * r

    def trial(self, drop: dict[str, np.ndarray], stop: tuple[str, int] | None,
              rejected: dict[str, np.ndarray] | None = None) -> _Trial | None:
        """Remove the members ``drop`` (per side, compact indices) and cascade to the maximum
        match inside what is left (the nested Algorithm 1: all violators of a side go at once,
        since a neuron that violates keeps violating as spans shrink; a removal on one side
        changes only the other side's projections, so only that side is checked next). Returns
        the trial, or None as soon as ``stop`` (v, as a compact (side, index)) leaves, or as
        soon as the cascade takes a member marked in ``rejected`` (per side, compact: neurons
        known to take v with them, :meth:`SimpleMatchEngine._search`)."""
        thr = self.eng.thr
        t = _Trial(self)
        vside, vk = stop if stop is not None else (None, -1)
        other = _OTHER
        check = []  # sides whose projections fell since they were last checked
        for side in ("x", "y"):
            ks = np.asarray(drop.get(side, ()), dtype=np.intp)
            if len(ks):
                if not self._drop(t, side, ks, vk if vside == other[side] else None):
                    return None
                check.append(other[side])
        while check:
            changed = check.pop(0)
            ins, proj = (t.inx, t.p) if changed == "x" else (t.iny, t.q)
            viol = np.flatnonzero(ins & (proj < 1.0 - thr))
            if not len(viol):
                continue
            if vside == changed and proj[vk] < 1.0 - thr:
                return None
            if rejected is not None and rejected[changed][viol].any():
                self.eng.stats.known_stops += 1
                return None
            if not self._drop(t, changed, viol, vk if vside == other[changed] else None):
                return None
            if other[changed] not in check:
                check.append(other[changed])
        return t

    def commit(self, t: _Trial) -> None:
        for corr, M in ((t.cx, self.Mx), (t.cy, self.My)):
            if corr.k:
                corr.commit(M)
        self.inx, self.iny, self.bx, self.by, self.p, self.q = t.inx, t.iny, t.bx, t.by, t.p, t.q
        self.ndx, self.ndy = t.ndx, t.ndy
        self.n -= t.out
        self.updates += t.cx.k + t.cy.k

    def maybe_rebuilt(self) -> "_State":
        """Recomputed from G after REBUILD_UPDATES updates (rounding stays bounded), else
        compacted once the match has shrunk enough."""
        if self.updates >= REBUILD_UPDATES:
            return _State(self.eng, *self.members())
        if self.n <= SHRINK * self.size and self.size - self.n >= MIN_SHRINK:
            return self.compacted()
        return self


class _Run:
    """One run of Algorithm 2 (:meth:`SimpleMatchEngine._search`): the current state, where
    each neuron sits in it, and the neurons whose own trial was rejected."""

    def __init__(self, eng: "SimpleMatchEngine", st: _State, v: tuple[str, int]):
        self.eng, self.v = eng, v
        self.pos = {"x": np.full(eng.nx, -1), "y": np.full(eng.ny, -1)}
        self.rejected = {"x": np.zeros(eng.nx, bool), "y": np.zeros(eng.ny, bool)}
        self._index(st)

    def _index(self, st: _State) -> None:
        self.st = st
        for side, ids in (("x", st.xs), ("y", st.ys)):
            self.pos[side][:] = -1
            self.pos[side][ids] = np.arange(len(ids))
        self.known = ({"x": self.rejected["x"][st.xs], "y": self.rejected["y"][st.ys]}
                      if self.eng.known_rejections else None)

    def _where(self, u: int) -> tuple[str, int, int]:
        """(side, index within the side, compact index in the state or -1) of internal id u."""
        side, j = ("x", u) if u < self.eng.nx else ("y", u - self.eng.nx)
        return side, j, int(self.pos[side][j])

    def alive(self, u: int) -> bool:
        side, _, k = self._where(u)
        return k >= 0 and bool((self.st.inx if side == "x" else self.st.iny)[k])

    def next_alive(self, cands: Sequence[int], i: int, size: int) -> tuple[list[int], int]:
        """Up to ``size`` candidates still in the match, from position i on; and where the
        scan stopped."""
        chunk = []
        while i < len(cands) and len(chunk) < size:
            if self.alive(cands[i]):
                chunk.append(cands[i])
            i += 1
        return chunk, i

    def process(self, chunk: list[int], loses_v: bool = False) -> bool:
        """Algorithm 2's steps for the candidates of ``chunk`` in order (those still alive);
        True when the chunk was accepted whole at once. ``loses_v``: removing the whole chunk
        is already known to lose v (the second half of a chunk that lost v, after its first
        half was accepted whole: gfp(gfp(S - C1) - C2) = gfp(S - C)), so it is split without
        a trial, or, a single candidate, rejected without one."""
        chunk = [u for u in chunk if self.alive(u)]
        if not chunk:
            return False
        if not loses_v:
            st = self.st
            drop = {"x": [], "y": []}
            for u in chunk:
                side, _, k = self._where(u)
                drop[side].append(k)
            vside, vid = self.v
            t = st.trial(drop, (vside, int(self.pos[vside][vid])), self.known)
            self.eng.stats.trials += 1
            if t is not None:
                self.eng.stats.chunks += len(chunk) > 1
                st.commit(t)
                new = st.maybe_rebuilt()
                if new is not st:
                    self._index(new)
                return True
        if len(chunk) == 1:
            side, j, k = self._where(chunk[0])
            self.rejected[side][j] = True
            if self.known is not None:
                self.known[side][k] = True
            return False
        half = len(chunk) // 2
        first_whole = self.process(chunk[:half])
        self.process(chunk[half:], loses_v=first_whole)
        return False


class RunStats:
    """What the engine did: runs settled by the kill-set proof, runs searched in full; in the
    full searches, trials made (``trials``), chunks of several candidates accepted by one trial
    (``chunks``), and trials stopped by a known rejection (``known_stops``)."""

    COUNTS = ("trials", "chunks", "known_stops")

    def __init__(self):
        self.proved = 0
        self.searched = 0
        self.components = 0
        self.seconds = 0.0
        self.trials = self.chunks = self.known_stops = 0

    def counts(self) -> tuple[int, ...]:
        return tuple(getattr(self, k) for k in self.COUNTS)

    def add_counts(self, counts: Sequence[int]) -> None:
        for k, n in zip(self.COUNTS, counts):
            setattr(self, k, getattr(self, k) + n)

    def __repr__(self):
        return (f"RunStats(proved={self.proved}, searched={self.searched}, "
                f"components={self.components}, trials={self.trials}, chunks={self.chunks}, "
                f"known_stops={self.known_stops}, seconds={self.seconds:.2f})")


class SimpleMatchEngine:
    """Algorithm 2 for many (v, order) runs at one ε from one base match (the maximum match of
    the universe the runs start from), on a prepared :class:`SubspaceProblem`'s Gram matrix.

    ``run_many`` returns, per run, the v-minimal match as boolean masks over the problem's live
    X and Y neurons, or None when v is not in the base match ("failure"). ``block``,
    ``known_rejections`` and ``chunks`` switch the full search's shortcuts (module docstring);
    each is exact, so switched off they give the same sets, only slower (for tests and
    benchmarks).
    """

    def __init__(self, problem, eps: float, base: tuple[np.ndarray, np.ndarray], *,
                 block: bool = True, known_rejections: bool = True, chunks: bool = True):
        G = problem.G.detach().cpu().numpy() if hasattr(problem.G, "detach") else np.asarray(problem.G)
        nx = problem.nx
        self.nx, self.ny = nx, problem.ny
        self.Gxx = G[:nx, :nx]
        self.Gyy = G[nx:, nx:]
        self.Gxy = G[:nx, nx:]
        self.thr = eps * eps + problem.atol
        self.base = base
        self.block = block  # cascade rounds as blocks (_State); False: rank-one throughout
        self.known_rejections = known_rejections  # stop cascades early (_search)
        self.max_chunk = MAX_CHUNK if chunks else 1  # candidates tried together (_search)
        self.root = _State(self, np.flatnonzero(base[0]), np.flatnonzero(base[1]))
        self._kill: np.ndarray | None = None
        self.stats = RunStats()

    def shortcuts(self) -> dict[str, bool]:
        """The full search's shortcuts as constructor arguments (each off gives the same sets)."""
        return {"block": self.block, "known_rejections": self.known_rejections,
                "chunks": self.max_chunk > 1}

    # ---- names --------------------------------------------------------------------------
    def _root_index(self, u: int) -> tuple[str, int] | None:
        """Compact (side, index) in the root state of internal id u, or None if not in it."""
        if u < self.nx:
            hit = np.searchsorted(self.root.xs, u)
            return ("x", int(hit)) if hit < len(self.root.xs) and self.root.xs[hit] == u else None
        u -= self.nx
        hit = np.searchsorted(self.root.ys, u)
        return ("y", int(hit)) if hit < len(self.root.ys) and self.root.ys[hit] == u else None

    # ---- kill sets and components ---------------------------------------------------------
    def kill_sets(self) -> np.ndarray:
        """``K[i, j]``: removing root member i alone takes member j with it (root order: X
        members, then Y members)."""
        if self._kill is None:
            st = self.root
            nxr, nyr = len(st.xs), len(st.ys)
            K = np.zeros((nxr + nyr, nxr + nyr), bool)
            for i in range(nxr + nyr):
                t = st.trial({"x": [i]} if i < nxr else {"y": [i - nxr]}, None)
                K[i] = ~np.r_[t.inx, t.iny]
            self._kill = K
        return self._kill

    def components(self) -> np.ndarray:
        """Component label per root member: members joined when one's removal kills the
        other (union-find over the kill relation)."""
        K = self.kill_sets()
        parent = np.arange(len(K))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for i, j in zip(*np.nonzero(K)):
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[ri] = rj
        return np.array([find(i) for i in range(len(K))])

    # ---- runs ----------------------------------------------------------------------------
    def _search(self, st: _State, v: tuple[str, int], order: Sequence[int]) -> _State:
        """Algorithm 2 in full from state ``st`` (v given as an internal id pair) in ``order``
        (internal ids); returns the final state. Two shortcuts leave every trial's outcome,
        and so the result, as in the one-by-one run (the engine's ``chunks`` and
        ``known_rejections``):

        * Consecutive candidates are tried together (the chunk doubles after each acceptance,
          up to ``MAX_CHUNK``): if v survives the removal of a whole chunk C from S, the run
          would have accepted each of them in turn and reached gfp(S - C) (monotonicity:
          gfp(S - C) lies in every intermediate state minus the next candidate). Otherwise the
          chunk is split in halves, each tried the same way, down to single candidates. A
          run starts with hundreds of acceptances in a row, which this takes in a few trials.
        * With ``known_rejections``, a trial stops as soon as its cascade takes a neuron whose
          own trial was rejected earlier in the run: at every point of a cascade the remaining
          set holds gfp(S - C), S only shrinks, and v is outside gfp(S' - u') for the earlier,
          larger state S' of a rejected u', so a cascade that removes u' ends without v. In
          the long tail of a run, where nearly every trial is rejected, cascades stop rounds
          earlier.
        """
        run = _Run(self, st, v)
        v_id = v[1] if v[0] == "x" else v[1] + self.nx
        cands = [u for u in order if u != v_id]
        i, size = 0, 1
        while i < len(cands):
            chunk, i = run.next_alive(cands, i, size)
            if not chunk:
                break
            accepted_whole = run.process(chunk)
            size = min(2 * size, self.max_chunk) if accepted_whole else 1
        return run.st

    def _masks(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xm = np.zeros(self.nx, bool)
        ym = np.zeros(self.ny, bool)
        xm[xs] = True
        ym[ys] = True
        return xm, ym

    def search(self, v: int, order: Sequence[int]):
        """Algorithm 2 in full for one run (no proof shortcut): masks, or None."""
        r = self._root_index(v)
        if r is None:
            return None
        vid = v if v < self.nx else v - self.nx
        st = self._search(self.root.copy(), (r[0], vid), order)
        return self._masks(*st.members())

    def settle(self, vs: Sequence[int], orders: Sequence[Sequence[int]], *, prove: bool = True,
               progress: Progress | None = None):
        """The runs that need no search: v outside the base (None), and, with ``prove``, the
        runs the kill-set proof settles. Returns the results so far and the indices left."""
        if progress is not None:
            progress(0, len(vs))
        out: list = [None] * len(vs)
        todo = [k for k, v in enumerate(vs) if self._root_index(v) is not None]
        rest = todo
        if prove and todo:
            settled = self._prove(vs, orders, todo, out)
            rest = [k for k, ok in zip(todo, settled) if not ok]
        self.stats.proved += len(todo) - len(rest)
        if progress is not None:
            progress(len(vs) - len(rest), len(vs))
        return out, rest

    def run_many(self, vs: Sequence[int], orders: Sequence[Sequence[int]], *,
                 prove: bool = True, progress: Progress | None = None, workers: int = 1):
        """Algorithm 2 for each (v, order) (internal ids). ``prove=False`` searches every run in
        full (the slow path, for tests and benchmarks). ``workers`` > 1: the runs left for a full
        search are shared out to that many processes (each run is exact on its own, so the
        results are the same whatever the split)."""
        t0 = time.perf_counter()
        out, rest = self.settle(vs, orders, prove=prove, progress=progress)
        self.stats.searched += len(rest)
        if workers > 1 and len(rest) >= 2 * workers:
            done = len(vs) - len(rest)
            report = None if progress is None else (lambda n: progress(done + n, len(vs)))
            found = self._search_in_processes([(vs[k], orders[k]) for k in rest], workers, report)
            for k, masks in zip(rest, found):
                out[k] = masks
        else:
            for n, k in enumerate(rest):
                out[k] = self.search(vs[k], orders[k])
                if progress is not None:
                    progress(len(vs) - len(rest) + n + 1, len(vs))
        self.stats.seconds += time.perf_counter() - t0
        return out

    def _search_in_processes(self, runs: list[tuple[int, Sequence[int]]], workers: int, report) -> list:
        """Full searches of ``runs`` in ``workers`` fresh processes ("spawn": a forked child of a
        process whose torch/OpenMP threads ran may hang), each rebuilding this engine once from
        the Gram matrix; results in the order of ``runs``, ``report(done)`` as chunks finish.
        Written by hand because a run is one long chain of small solves: threads would contend
        for the GIL, and the runs are independent, so processes scale."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        G = np.block([[self.Gxx, self.Gxy], [self.Gxy.T, self.Gyy]])
        chunk = max(1, len(runs) // (8 * workers))  # several chunks per worker: balance and progress
        chunks = [runs[i:i + chunk] for i in range(0, len(runs), chunk)]
        found: list = []
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker,
                                 initargs=(G, self.nx, self.ny, self.thr, self.base,
                                           self.shortcuts())) as pool:
            for part, counts in pool.map(_search_chunk, chunks):
                found.extend(part)
                self.stats.add_counts(counts)
                if report is not None:
                    report(len(found))
        return found

    def _prove(self, vs, orders, todo, out) -> list[bool]:
        """Settle runs by the kill-set proof (module docstring); fills ``out`` for those."""
        K = self.kill_sets()
        label = self.components()
        nxr = len(self.root.xs)
        ids = np.r_[self.root.xs, self.root.ys + self.nx]  # root member -> internal id
        comps: dict[int, np.ndarray] = {}
        for lab in np.unique(label):
            comps[int(lab)] = np.flatnonzero(label == lab)
        self.stats.components = len(comps)
        rigid: dict[int, bool] = {}
        settled = []
        for k in todo:
            side, i = self._root_index(vs[k])
            ri = i if side == "x" else nxr + i
            members = comps[int(label[ri])]
            if len(members) > MAX_COMPONENT:
                settled.append(False)
                continue
            lab = int(label[ri])
            if lab not in rigid:
                rigid[lab] = bool(K[np.ix_(members, members)].all()) and self._is_match(
                    ids[members])
            if rigid[lab]:
                cand = ids[members]
            else:
                cand = self._component_run(ids[members], vs[k], orders[k])
                if cand is None:
                    settled.append(False)
                    continue
            # the proof: every other member u of the candidate kills v on its own
            pos = np.searchsorted(ids, cand)
            if not K[pos[cand != vs[k]], ri].all():
                settled.append(False)
                continue
            out[k] = self._masks(cand[cand < self.nx], cand[cand >= self.nx] - self.nx)
            settled.append(True)
        return settled

    def _is_match(self, ids: np.ndarray) -> bool:
        xs, ys = ids[ids < self.nx], ids[ids >= self.nx] - self.nx
        if not (len(xs) and len(ys)):
            return False
        st = _State(self, xs, ys)
        return bool((1.0 - st.p <= self.thr).all() and (1.0 - st.q <= self.thr).all())

    def _component_run(self, ids: np.ndarray, v: int, order: Sequence[int]):
        """Algorithm 2 inside a component (a candidate): internal ids, or None."""
        xs, ys = ids[ids < self.nx], ids[ids >= self.nx] - self.nx
        st = _State(self, xs, ys)
        # the maximum match inside the component first (Algorithm 1 by cascades)
        while True:
            vx = np.flatnonzero(st.inx & (1.0 - st.p > self.thr))
            vy = np.flatnonzero(st.iny & (1.0 - st.q > self.thr))
            if not (len(vx) or len(vy)):
                break
            t = _Trial(st)
            st._drop(t, "x", vx, None)
            st._drop(t, "y", vy, None)
            st.commit(t)
            st = _State(self, *st.members())
        mx, my = st.members()
        vside, vid = ("x", v) if v < self.nx else ("y", v - self.nx)
        if vid not in (mx if vside == "x" else my):
            return None
        st = _State(self, mx, my)
        members = set(np.r_[mx, my + self.nx].tolist())
        st = self._search(st, (vside, vid), [u for u in order if u in members])
        fx, fy = st.members()
        return np.r_[fx, fy + self.nx]


# ---- worker processes (SimpleMatchEngine._search_in_processes) ------------------------------
_WORKER_ENGINE: "SimpleMatchEngine | None" = None


def _start_worker(G: np.ndarray, nx: int, ny: int, thr: float, base, shortcuts: dict) -> None:
    from types import SimpleNamespace

    global _WORKER_ENGINE
    # the engine's threshold is eps^2 + atol: eps 0 and atol thr give the parent's bit for bit
    problem = SimpleNamespace(G=G, nx=nx, ny=ny, atol=thr)
    _WORKER_ENGINE = SimpleMatchEngine(problem, 0.0, base, **shortcuts)


def _search_chunk(runs):
    """Results of ``runs`` and what the worker's engine counted for them (RunStats.counts)."""
    before = _WORKER_ENGINE.stats.counts()
    with single_threaded():
        found = [_WORKER_ENGINE.search(v, order) for v, order in runs]
    after = _WORKER_ENGINE.stats.counts()
    return found, tuple(a - b for a, b in zip(after, before))

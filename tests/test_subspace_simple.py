"""Simple matches at scale (convergent.subspace_simple): the new engine returns exactly the sets
the batched engine it replaced returns (kept in convergent._subspace_batched as the reference),
run for run and for whole simple-match searches, on random, ReLU-like, planted and linearly
dependent inputs; the kill-set proof it rests on is checked against Algorithm 1 directly."""

from __future__ import annotations

import numpy as np
import pytest

from convergent._subspace_batched import batched_alg2, reference_simple_matches
from convergent.subspace import SubspaceProblem, planted_pair
from convergent.subspace_simple import RateLog, SimpleMatchEngine, progress_callback


def case(seed):
    """Small inputs of several kinds, sized so that matches of all sizes occur."""
    rng = np.random.default_rng(seed)
    kind = seed % 4
    if kind == 0:  # Gaussian, d close to the number of units
        d, nx, ny = int(rng.integers(6, 14)), int(rng.integers(2, 7)), int(rng.integers(2, 7))
        return rng.standard_normal((d, nx)), rng.standard_normal((d, ny))
    if kind == 1:  # non-negative, uncentered, correlated, like ReLU activations
        d, k = int(rng.integers(8, 16)), int(rng.integers(3, 7))
        H = rng.standard_normal((d, k))
        X = np.maximum(H @ rng.standard_normal((k, int(rng.integers(3, 8)))), 0)
        Y = np.maximum(H @ rng.standard_normal((k, int(rng.integers(3, 8)))), 0)
        return X + 0.05 * rng.random(X.shape), Y + 0.05 * rng.random(Y.shape)
    if kind == 2:  # linearly dependent: a duplicate direction, d < n
        d = 5
        X = rng.standard_normal((d, 4))
        Y = np.c_[X[:, :2] @ rng.standard_normal((2, 2)), rng.standard_normal((d, 3))]
        return np.c_[X, X[:, 0] * 2.0], Y
    # planted blocks whose noise straddles ε, broken blocks and private units
    blocks = list(rng.integers(1, 5, int(rng.integers(2, 5))))
    return planted_pair(40, blocks, broken=[3] if seed % 2 else [], private_x=1, private_y=2,
                        noise=rng.uniform(0.05, 0.6, len(blocks)), seed=seed)[:2]


def same(a, b):
    return (a is None and b is None) or (
        a is not None and b is not None and np.array_equal(a[0], b[0])
        and np.array_equal(a[1], b[1]))


def test_every_run_equals_the_batched_engine():
    """Algorithm 2 for every neuron (not only the maximum match's) in two random orders each,
    through the proof path and the full search, against the batched engine: the same sets."""
    runs = proved = searched = nontrivial = 0
    for seed in range(36):
        X, Y = case(seed)
        P = SubspaceProblem(X, Y, device="cpu")
        n = P.nx + P.ny
        rng = np.random.default_rng(seed)
        for eps in (0.25, 0.5, 0.7):
            base = P._max_masks_cached(eps)
            vs = list(range(n)) * 2
            orders = [list(rng.permutation(n)) for _ in vs]
            ref = batched_alg2(P, eps, base, vs, orders)
            engine = SimpleMatchEngine(P, eps, base)
            fast = engine.run_many(vs, orders)
            full = engine.run_many(vs, orders, prove=False)
            assert all(same(a, b) and same(a, c) for a, b, c in zip(ref, fast, full)), (seed, eps)
            runs += len(vs)
            size = base[0].sum() + base[1].sum()
            nontrivial += sum(r is not None and 2 < r[0].sum() + r[1].sum() < size for r in ref)
        proved += engine.stats.proved
        searched += engine.stats.searched
    assert runs > 2500 and nontrivial > 500
    assert proved > 150 and searched > 800  # both paths were exercised


def test_simple_matches_equal_the_reference_search():
    """The public search (same seed, same random orders) finds the same simple matches, each
    found by the same number of runs, as the search it replaced; on a planted layer the
    proof settles most runs."""
    X, Y, planted = planted_pair(300, [1, 2, 3, 4, 5, 2, 3], broken=[3, 2], private_x=6,
                                 private_y=5, noise=[0.02, 0.1, 0.2, 0.28, 0.05, 0.35, 0.15],
                                 seed=4)
    P = SubspaceProblem(X, Y, device="cpu")
    for eps in (0.15, 0.25, 0.3):
        new = P.simple_matches(eps, restarts=3, seed=7)
        stats = P.last_engine_stats
        ref = reference_simple_matches(P, eps, restarts=3, seed=7)
        assert new.matches == ref.matches and new.counts == ref.counts, eps
        assert stats.proved > stats.searched
    for seed in range(6):  # real-like inputs where most runs need the full search
        X, Y = case(4 * seed + 1)
        P = SubspaceProblem(X, Y, device="cpu")
        new = P.simple_matches(0.5, restarts=2, seed=seed)
        ref = reference_simple_matches(P, 0.5, restarts=2, seed=seed)
        assert new.matches == ref.matches and new.counts == ref.counts


def test_kill_sets_are_single_removal_cascades():
    """K[u] is what removing u alone from the maximum match takes with it: the maximum match
    minus Algorithm 1's result on the universe without u (computed from scratch)."""
    for seed in (3, 7, 9):
        X, Y = case(seed)
        P = SubspaceProblem(X, Y, device="cpu")
        base = P._max_masks_cached(0.5)
        engine = SimpleMatchEngine(P, 0.5, base)
        K = engine.kill_sets()
        members = np.flatnonzero(np.r_[base[0], base[1]])
        for i, u in enumerate(members):
            ux, uy = base[0].copy(), base[1].copy()
            if u < P.nx:
                ux[u] = False
            else:
                uy[u - P.nx] = False
            xm, ym = P._max_match_masks(0.5, ux, uy)
            assert np.array_equal(K[i], ~np.r_[xm, ym][members])
            assert K[i, i]


def test_progress_reports_every_run():
    X, Y, _ = planted_pair(200, [2, 3, 1], private_x=2, private_y=2, noise=0.3, seed=1)
    P = SubspaceProblem(X, Y, device="cpu")
    seen = []
    P.simple_matches(0.25, restarts=2, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == 2 * P.max_match(0.25).match.size
    assert all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))
    assert progress_callback(None, "x") is None and callable(progress_callback(True, "x"))
    with pytest.raises(TypeError):
        progress_callback(3, "x")


def test_rate_log_prints_lines_with_rate_and_estimate(capsys):
    log = RateLog("conv1 0-1 ε=0.25 simple matches", every=0.0)
    log(5, 10)
    log(10, 10)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("conv1 0-1 ε=0.25 simple matches: 5/10 runs") and "left" in lines[0]
    assert lines[1].endswith("done")

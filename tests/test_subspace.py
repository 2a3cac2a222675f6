"""Wang et al. 2018 subspace matches: the fast Gram core against the least-squares reference,
and the properties the paper proves (§3–4), on random, structured and planted inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from convergent.subspace import (
    EPS_GRID,
    SubspaceMatch,
    SubspaceProblem,
    all_min_matches,
    max_match,
    min_match,
    simple_matches,
    similarity,
    similarity_curve,
)
from convergent.subspace_testing import Margin, planted_pair, reference_max_match, reference_min_match

#: inputs with a decision closer than this to the threshold (in dist²/|z|²) are not compared:
#: float64 Gram rounding may legitimately flip those (see the module's "Tolerance")
SAFE = 1e-6


def neurons(nx, ny):
    return [("x", i) for i in range(nx)] + [("y", j) for j in range(ny)]


def rel2(z, Z):
    """dist²(z, span(Z)) / |z|², straight least squares."""
    if Z.shape[1] == 0:
        return 1.0
    c = np.linalg.lstsq(Z, z, rcond=None)[0]
    r = z - Z @ c
    return float(r @ r / (z @ z))


def is_match(X, Y, xs, ys, eps, margin=None):
    """Definition 1, checked directly."""
    ok = True
    for Z, W, src, span in ((X, Y, xs, ys), (Y, X, ys, xs)):
        for i in src:
            r = rel2(Z[:, i], W[:, list(span)])
            if margin is not None:
                margin.see(r, eps)
            ok &= r <= eps * eps + 1e-10
    return ok


def random_case(seed):
    """Small inputs of several kinds, sized so that matches of all sizes occur."""
    rng = np.random.default_rng(seed)
    kind = seed % 3
    if kind == 0:  # Gaussian, d close to the number of units
        d, nx, ny = int(rng.integers(6, 14)), int(rng.integers(2, 7)), int(rng.integers(2, 7))
        return rng.standard_normal((d, nx)), rng.standard_normal((d, ny))
    if kind == 1:  # non-negative, uncentered, correlated, like ReLU activations
        d, k = int(rng.integers(8, 16)), int(rng.integers(3, 7))
        H = rng.standard_normal((d, k))
        X = np.maximum(H @ rng.standard_normal((k, int(rng.integers(3, 7)))), 0)
        Y = np.maximum(H @ rng.standard_normal((k, int(rng.integers(3, 7)))), 0)
        X += 0.05 * rng.random(X.shape)
        Y += 0.05 * rng.random(Y.shape)
        return X, Y
    # planted blocks whose noise straddles ε, plus broken blocks and private units
    blocks = list(rng.integers(1, 5, int(rng.integers(1, 4))))
    return planted_pair(40, blocks, broken=[3] if seed % 2 else [], private_x=1, private_y=2,
                        noise=rng.uniform(0.05, 0.6, len(blocks)), seed=seed)[:2]


def test_fast_equals_reference_on_many_inputs():
    """Algorithm 1 and Algorithm 2 (every v, index order and a random order): same sets."""
    compared = skipped = nontrivial = 0
    for seed in range(45):
        X, Y = random_case(seed)
        nx, ny = X.shape[1], Y.shape[1]
        order = [neurons(nx, ny)[k] for k in np.random.default_rng(seed).permutation(nx + ny)]
        P = SubspaceProblem(X, Y, device="cpu")
        for eps in (0.25, 0.5, 0.7):
            mg = Margin()
            ref = reference_max_match(X, Y, eps, margin=mg)
            ref_min = [reference_min_match(X, Y, v, eps, o, margin=mg)
                       for o in (None, order) for v in neurons(nx, ny)]
            if mg.closest < SAFE:
                skipped += 1
                continue
            compared += 1
            assert P.max_match(eps).match == ref, (seed, eps)
            fast_min = (P.min_matches(neurons(nx, ny), eps, order="index")
                        + P.min_matches(neurons(nx, ny), eps, order=order))
            assert fast_min == ref_min, (seed, eps)
            nontrivial += any(m is not None and 2 < m.size < ref.size for m in ref_min)
    assert compared >= 100 and skipped <= 0.2 * (compared + skipped)
    assert nontrivial >= 20  # the comparison saw proper, non-singleton minimal matches


def test_bruteforce_matches_on_tiny_inputs():
    """Every match (by enumeration) is inside Algorithm 1's result, which is their union
    (Definition 3); unions of matches are matches (Lemma 2); the simple matches by Definition 4
    are exactly Algorithm 3's v-minimal matches over all v (Theorem 10)."""
    checked = 0
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        d, nx, ny = 6, 3, int(rng.integers(3, 5))
        X, Y = rng.standard_normal((d, nx)), rng.standard_normal((d, ny))
        eps = 0.55
        mg = Margin()
        matches = [(frozenset(xs), frozenset(ys))
                   for a in range(nx + 1) for xs in itertools.combinations(range(nx), a)
                   for b in range(ny + 1) for ys in itertools.combinations(range(ny), b)
                   if is_match(X, Y, xs, ys, eps, mg)]
        if mg.closest < SAFE:
            continue
        checked += 1
        ux = frozenset().union(*(m[0] for m in matches))
        uy = frozenset().union(*(m[1] for m in matches))
        mm = max_match(X, Y, eps, device="cpu")
        assert (set(mm.x), set(mm.y)) == (ux, uy)
        mset = set(matches)
        for (x1, y1), (x2, y2) in itertools.combinations(matches, 2):
            assert (x1 | x2, y1 | y2) in mset
        simple = set()
        for mx, my in matches:
            inner = [(a, b) for a, b in matches if (a | b) < (mx | my)]
            if (mx or my) and (frozenset().union(*(a for a, _ in inner)),
                               frozenset().union(*(b for _, b in inner))) != (mx, my):
                simple.add(SubspaceMatch(tuple(sorted(mx)), tuple(sorted(my))))
        sm = simple_matches(X, Y, eps, method="exhaustive", device="cpu")
        assert sm.complete and set(sm.matches) == simple
        assert set(simple_matches(X, Y, eps, restarts=8, seed=seed, device="cpu").matches) <= simple
    assert checked >= 30


def test_minimal_matches_are_minimal_matches_and_union_closed():
    """Each Algorithm 2 result contains v, is a match, lies in the maximum match, and no
    neuron can be removed from it while v stays in a match (Definition 9, single removals);
    the union of any two is again a match (Lemma 2)."""
    for seed in range(6):
        X, Y, _ = planted_pair(30, [2, 3], broken=[2], private_x=1, private_y=1,
                               noise=[0.1, 0.35], seed=seed)
        eps = 0.25
        P = SubspaceProblem(X, Y, device="cpu")
        mm = P.max_match(eps).match
        vs = neurons(X.shape[1], Y.shape[1])
        found = [(v, m) for v, m in zip(vs * 2, P.min_matches(vs, eps, seed=seed, restarts=2))
                 if m is not None]
        assert {v for v, _ in found} == set(mm.neurons())
        for v, m in found:
            assert v in m and set(m.x) <= set(mm.x) and set(m.y) <= set(mm.y)
            assert is_match(X, Y, m.x, m.y, eps)
            for u in m.neurons():
                xs = [i for i in m.x if ("x", i) != u]
                ys = [j for j in m.y if ("y", j) != u]
                sub = reference_max_match(X[:, xs], Y[:, ys], eps) if xs and ys else None
                back = SubspaceMatch(tuple(xs[i] for i in sub.x),
                                     tuple(ys[j] for j in sub.y)) if sub else SubspaceMatch((), ())
                assert v not in back
        for (_, a), (_, b) in itertools.combinations(found, 2):
            u = a.union(b)
            assert is_match(X, Y, u.x, u.y, eps)


def test_exact_match_v_minimum_is_unique():
    """ε = 0, linearly independent vectors: one v-minimum match per v (Theorem 12), Algorithm 3
    returns exactly it, whatever the order, and the simple matches are the planted spans."""
    X, Y, planted = planted_pair(50, [1, 2, 3, 4], broken=[2], private_x=2, private_y=3,
                                 noise=0.0, seed=3)
    assert np.linalg.matrix_rank(X) == X.shape[1] and np.linalg.matrix_rank(Y) == Y.shape[1]
    P = SubspaceProblem(X, Y, device="cpu")
    for block in planted["matches"]:
        for v in block.neurons():
            r = P.all_min_matches(v, 0.0)
            assert r.complete and r.matches == (block,)
            assert {P.min_match(v, 0.0, order="random", seed=s) for s in range(4)} == {block}
            assert reference_min_match(X, Y, v, 0.0) == block
    assert set(P.simple_matches(0.0, method="exhaustive").matches) == set(planted["matches"])


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_planted_subspaces_are_recovered(eps):
    """Shared subspaces of known sizes in noise: the maximum match is their union and the
    simple matches (exhaustive and §5.2's randomized estimate) are exactly them."""
    X, Y, planted = planted_pair(120, [1, 1, 2, 3, 4, 5], broken=[3, 4], private_x=5,
                                 private_y=4, noise=0.01, seed=int(eps * 100))
    assert eps < planted["eps_max"]
    union = planted["matches"][0]
    for m in planted["matches"][1:]:
        union = union.union(m)
    P = SubspaceProblem(X, Y, device="cpu")
    assert P.max_match(eps).match == union
    assert P.similarity(eps) == union.size / (X.shape[1] + Y.shape[1])
    ex = P.simple_matches(eps, method="exhaustive")
    assert ex.complete and set(ex.matches) == set(planted["matches"])
    rnd = P.simple_matches(eps, restarts=2, seed=1)
    assert set(rnd.matches) == set(planted["matches"]) and not rnd.complete
    assert sum(rnd.counts) == 2 * union.size  # every run of every v found its block
    assert sorted(rnd.sizes()) == sorted(2 * k for k in (1, 1, 2, 3, 4, 5))


def test_neuron_outside_the_maximum_match_gets_no_match():
    X, Y, planted = planted_pair(40, [2], private_x=2, private_y=1, noise=0.01, seed=0)
    mm = max_match(X, Y, 0.2, device="cpu")
    outside = [v for v in neurons(X.shape[1], Y.shape[1]) if v not in mm.match]
    assert len(outside) == 3
    for v in outside:
        assert min_match(X, Y, v, 0.2, device="cpu") is None
        r = all_min_matches(X, Y, v, 0.2, device="cpu")
        assert r.matches == () and r.complete
    with pytest.raises(IndexError):
        min_match(X, Y, ("x", X.shape[1]), 0.2, device="cpu")


def test_zero_vectors_are_dropped_and_reported():
    X, Y, planted = planted_pair(40, [1, 2], private_x=1, private_y=1, noise=0.01, seed=5)
    Xz = np.insert(X, [0, 2], 0.0, axis=1)  # zero columns at 0 and 3; X's columns shift
    Yz = np.insert(Y, Y.shape[1], 0.0, axis=1)
    mm = max_match(Xz, Yz, 0.2, device="cpu")
    assert mm.dropped_x == (0, 3) and mm.dropped_y == (Y.shape[1],)
    assert (mm.n_x, mm.n_y) == (X.shape[1], Y.shape[1])
    live_x = [i for i in range(Xz.shape[1]) if i not in (0, 3)]
    ref = max_match(X, Y, 0.2, device="cpu")
    assert mm.x == tuple(live_x[i] for i in ref.x) and mm.y == ref.y
    assert mm.similarity == ref.similarity
    assert min_match(Xz, Yz, ("x", 0), 0.2, device="cpu") is None  # dropped: in no match
    for v in ref.match.neurons():
        m0 = min_match(X, Y, v, 0.2, device="cpu")
        vz = ("x", live_x[v[1]]) if v[0] == "x" else v
        mz = min_match(Xz, Yz, vz, 0.2, device="cpu")
        assert mz == SubspaceMatch(tuple(live_x[i] for i in m0.x), m0.y)


def test_budget_stops_cleanly_with_several_minimal_matches():
    """x close to two different y's: two x-minimal matches (approximate matches are not closed
    under intersection, §3.2); Algorithm 3 finds both, or says it stopped."""
    rng = np.random.default_rng(0)
    d = 30
    x = rng.standard_normal(d)
    n1, n2 = rng.standard_normal((2, d))
    n1 -= (n1 @ x) / (x @ x) * x
    n2 -= (n2 @ x) / (x @ x) * x + (n2 @ n1) / (n1 @ n1) * n1
    X = x[:, None]
    Y = np.c_[x + 0.1 * np.linalg.norm(x) * n1 / np.linalg.norm(n1),
              x + 0.1 * np.linalg.norm(x) * n2 / np.linalg.norm(n2)]
    full = all_min_matches(X, Y, ("x", 0), 0.2, device="cpu")
    assert full.complete and set(full.matches) == {SubspaceMatch((0,), (0,)),
                                                   SubspaceMatch((0,), (1,))}
    cut = all_min_matches(X, Y, ("x", 0), 0.2, budget=1, device="cpu")
    assert not cut.complete and cut.calls == 1 and len(cut.matches) == 1
    assert set(simple_matches(X, Y, 0.2, method="exhaustive", device="cpu").matches) == \
        set(full.matches)


def test_scale_gram_and_grid_consistency():
    """Results do not depend on column scales, come out the same from a precomputed Gram
    matrix, and s(ε) over the grid equals fresh per-ε runs and grows with ε."""
    rng = np.random.default_rng(7)
    X, Y = random_case(4)
    P = SubspaceProblem(X, Y, device="cpu")
    Ps = SubspaceProblem(X * rng.uniform(1e-3, 1e3, X.shape[1]), Y * 7.0, device="cpu")
    Z = np.c_[X, Y]
    Pg = SubspaceProblem.from_gram(Z.T @ Z, X.shape[1], device="cpu")
    grid = (0.7, 0.25, 0.5, 0.15, 0.3, 0.6)
    curve = P.similarity_curve(grid)
    assert np.array_equal(curve, [similarity(X, Y, e, device="cpu") for e in grid])
    assert np.array_equal(curve, similarity_curve(X, Y, grid, device="cpu"))
    order = np.argsort(grid)
    assert np.all(np.diff(curve[order]) >= 0)
    for e in grid:
        assert Ps.max_match(e).match == Pg.max_match(e).match == P.max_match(e).match
    assert len(EPS_GRID) == 5


def test_dependent_neurons_agree_with_least_squares():
    """Duplicated neurons and d < n make sets linearly dependent: Algorithm 2's bases swap in
    dependent members when a basis neuron leaves, and still agree with least squares."""
    compared = 0
    for seed in range(24):
        rng = np.random.default_rng(seed)
        if seed % 2:  # a duplicate direction and a shared plane
            d = 5
            X = rng.standard_normal((d, 4))
            Y = np.c_[X[:, :2] @ rng.standard_normal((2, 2)), rng.standard_normal((d, 3))]
            X = np.c_[X, X[:, 0] * 2.0]
        else:  # fewer samples than neurons: every set of d neurons spans everything
            d = 4
            X, Y = rng.standard_normal((d, 6)), rng.standard_normal((d, 5))
            X[:, 5] = X[:, :2] @ rng.standard_normal(2)
        vs = neurons(X.shape[1], Y.shape[1])
        order = [vs[k] for k in rng.permutation(len(vs))]
        for eps in (0.3, 0.6):
            mg = Margin()
            ref = [reference_min_match(X, Y, v, eps, o, margin=mg) for o in (None, order)
                   for v in vs]
            if mg.closest < SAFE:
                continue
            compared += 1
            P = SubspaceProblem(X, Y, device="cpu")
            assert (P.min_matches(vs, eps, order="index")
                    + P.min_matches(vs, eps, order=order)) == ref, (seed, eps)
    assert compared >= 30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_gpu_equals_cpu():
    X, Y, _ = planted_pair(500, [1, 2, 3, 4], broken=[3], private_x=8, private_y=8,
                           noise=[0.05, 0.2, 0.3, 0.1], seed=0)
    for eps in EPS_GRID:
        c, g = SubspaceProblem(X, Y, device="cpu"), SubspaceProblem(X, Y, device="cuda")
        assert c.max_match(eps).match == g.max_match(eps).match
        assert c.min_matches(None, eps, seed=1) == g.min_matches(None, eps, seed=1)


def test_bad_arguments():
    X = np.ones((4, 2))
    with pytest.raises(ValueError):
        max_match(X, np.ones((5, 2)), 0.2)
    with pytest.raises(ValueError):
        max_match(X, X, 1.0)
    with pytest.raises(ValueError):
        simple_matches(X, X, 0.2, method="nope")

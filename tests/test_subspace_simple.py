"""Simple matches at scale (convergent.subspace_simple): the new engine returns exactly the sets
the batched engine it replaced returns (kept in convergent._subspace_batched as the reference),
run for run and for whole simple-match searches, on random, ReLU-like, planted and linearly
dependent inputs; the kill-set proof it rests on is checked against Algorithm 1 directly."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import STATISTICS
from convergent._subspace_batched import batched_alg2, reference_simple_matches
from convergent.subspace import SubspaceProblem
from convergent.subspace_simple import RateLog, SimpleMatchEngine, progress_callback
from convergent.subspace_testing import planted_pair


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


# the search's shortcuts, each switched off alone and all together (every variant must give the
# same sets): cascade rounds as blocks, stops at known rejections, chunks of candidates
VARIANTS = {
    "all shortcuts": dict(),
    "rank-one rounds": dict(block=False),
    "no known rejections": dict(known_rejections=False),
    "one candidate at a time": dict(chunks=False),
    "none": dict(block=False, known_rejections=False, chunks=False),
}


@pytest.fixture(scope="module")
def every_run_cases():
    """Per case and ε: the problem, the base match, every neuron in two random orders, and the
    batched engine's sets for those runs (computed once for all variants)."""
    cases = []
    for seed in range(36):
        X, Y = case(seed)
        P = SubspaceProblem(X, Y, device="cpu")
        n = P.nx + P.ny
        rng = np.random.default_rng(seed)
        for eps in (0.25, 0.5, 0.7):
            base = P._max_masks_cached(eps)
            vs = list(range(n)) * 2
            orders = [list(rng.permutation(n)) for _ in vs]
            cases.append((seed, eps, P, base, vs, orders, batched_alg2(P, eps, base, vs, orders)))
    return cases


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_run_equals_the_batched_engine(variant, every_run_cases):
    """Algorithm 2 for every neuron (not only the maximum match's) in two random orders each,
    through the proof path and the full search, against the batched engine: the same sets,
    with the search's shortcuts on, or some of them off."""
    runs = proved = searched = nontrivial = 0
    counts = np.zeros(3, int)
    for seed, eps, P, base, vs, orders, ref in every_run_cases:
        engine = SimpleMatchEngine(P, eps, base, **VARIANTS[variant])
        fast = engine.run_many(vs, orders)
        full = engine.run_many(vs, orders, prove=False)
        assert all(same(a, b) and same(a, c) for a, b, c in zip(ref, fast, full)), (seed, eps)
        runs += len(vs)
        size = base[0].sum() + base[1].sum()
        nontrivial += sum(r is not None and 2 < r[0].sum() + r[1].sum() < size for r in ref)
        counts += engine.stats.counts()
        proved += engine.stats.proved
        searched += engine.stats.searched
    assert runs > 2500 and nontrivial > 500
    assert proved > 150 and searched > 800  # both paths were exercised
    trials, chunks, known_stops = counts
    options = VARIANTS[variant]
    assert (chunks > 100) == options.get("chunks", True)  # the shortcuts ran where on
    assert (known_stops > 20) == options.get("known_rejections", True)


def shared_latent_layer(d, n, rank, seed):
    """Two nets of n units each over one shared latent of ``rank`` dimensions, every unit with
    its own noise (relative size 0.1-0.4, around ε): maximum matches of most units whose runs
    first accept many removals in a row and then reject nearly every one, the shape of a
    trained layer's runs."""
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((d, rank))

    def net():
        S = H @ rng.standard_normal((rank, n))
        N = rng.standard_normal((d, n))
        return S / np.linalg.norm(S, axis=0) + rng.uniform(0.1, 0.4, n) * N / np.linalg.norm(N, axis=0)

    return net(), net()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_runs_on_a_wide_layer_equal_the_batched_engine(variant):
    """Where the shortcuts matter (long runs of acceptances, then long cascades that end
    without v), the runs searched in full return the batched engine's sets."""
    X, Y = shared_latent_layer(600, 48, 12, seed=0)
    P = SubspaceProblem(X, Y, device="cpu")
    eps = 0.3
    base = P._max_masks_cached(eps)
    members = np.flatnonzero(np.r_[base[0], base[1]])
    assert len(members) > 60
    rng = np.random.default_rng(1)
    vs = list(rng.choice(members, 12, replace=False))
    orders = [list(rng.permutation(P.nx + P.ny)) for _ in vs]
    engine = SimpleMatchEngine(P, eps, base, **VARIANTS[variant])
    found = engine.run_many(vs, orders, prove=False)
    ref = batched_alg2(P, eps, base, vs, orders)
    assert all(same(a, b) for a, b in zip(ref, found))
    sizes = [r[0].sum() + r[1].sum() for r in ref]
    assert min(sizes) > 4 and max(sizes) < len(members)  # neither trivial nor the whole match
    trials, chunks, known_stops = engine.stats.counts()
    if variant == "all shortcuts":  # both shortcuts were taken in every run, on average
        assert chunks >= len(vs) and known_stops > 5 * len(vs)


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


def test_proof_then_batched_engine_as_on_cuda():
    """The CUDA path (proof on the CPU, the unsettled runs through the batched engine), run on
    the CPU: the same sets as the search."""
    for seed in (1, 3, 5, 6):
        X, Y = case(seed)
        P = SubspaceProblem(X, Y, device="cpu")
        n = P.nx + P.ny
        rng = np.random.default_rng(seed)
        vs = list(range(n)) * 2
        orders = [list(rng.permutation(n)) for _ in vs]
        base = P._max_masks_cached(0.5)
        cuda_like = P._alg2(0.5, base, vs, orders, batched=True)
        assert all(same(a, b) for a, b in zip(cuda_like, P._alg2(0.5, base, vs, orders))), seed


def test_runs_shared_out_to_worker_processes_give_the_same_matches():
    """``workers``: the runs searched in full go to spawned processes that rebuild the engine from
    the Gram matrix; every run's result, the simple matches and their counts are the same as in
    one process, and progress still reaches every run."""
    X, Y = case(9)  # real-like: most runs need the full search
    P = SubspaceProblem(X, Y, device="cpu")
    n = P.nx + P.ny
    rng = np.random.default_rng(2)
    vs = list(range(n)) * 4
    orders = [list(rng.permutation(n)) for _ in vs]
    base = P._max_masks_cached(0.5)
    one = SimpleMatchEngine(P, 0.5, base).run_many(vs, orders, prove=False)
    seen = []
    shared = SimpleMatchEngine(P, 0.5, base).run_many(vs, orders, prove=False, workers=2,
                                                     progress=lambda done, total: seen.append(done))
    assert all(same(a, b) for a, b in zip(one, shared))
    assert sum(r is not None for r in one) >= 5 and seen[-1] == len(vs)
    single, split = P.simple_matches(0.5, restarts=3, seed=1), P.simple_matches(0.5, restarts=3, seed=1, workers=2)
    assert split.matches == single.matches and split.counts == single.counts


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
    log = RateLog("conv1 0-1 simple matches at eps=0.25, Algorithm 2 runs", every=0.0)
    log(0, 10)  # the clock starts
    time.sleep(0.01)
    log(5, 10)
    log(10, 10)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("conv1 0-1 simple matches at eps=0.25, Algorithm 2 runs: 5/10, ")
    assert "/s" in lines[0] and "s left" in lines[0] and lines[1].endswith("done")


def test_too_few_rows_are_flagged_warned_and_not_searched(tmp_path):
    """d below min_rows_per_unit × live units: a warning, no simple-match search, the flag in the
    result, its file, the per-pair frame and the per-layer summary; enough rows: searched."""
    import h5py

    from convergent.subspace_layers import UndersampledWarning, compare_layer
    from convergent.subspace_results import (read_pair_result, similarity_frame, summarize_similarity,
                                             write_pair_result)

    X, Y, planted = planted_pair(400, [2, 3], private_x=3, private_y=3, noise=0.05, seed=2)
    private = sorted(set(range(X.shape[1])) - {i for m in planted["matches"] for i in m.x})
    X[:, private[0]] = 0.0  # a dead unit: the ratio counts live units
    live = X.shape[1] - 1 + Y.shape[1]
    stages = []
    with pytest.warns(UndersampledWarning, match="simple matches skipped"):
        few = compare_layer(X[:60], Y[:60], layer="fc1", kind="fc", eps_grid=[0.25],
                            simple_eps=[0.25], min_rows_per_unit=8)
    assert few.simple == {} and few.undersampled and few.rows_per_unit == 60 / live
    enough = compare_layer(X, Y, layer="fc1", kind="fc", eps_grid=[0.25], simple_eps=[0.25],
                           min_rows_per_unit=8, progress=lambda *a: stages.append(a))
    assert not enough.undersampled and len(enough.simple[0.25][2]) == 2
    assert ("s(eps), draws of rows", 0, 1) in stages and ("s(eps), draws of rows", 1, 1) in stages
    assert any(s.startswith("simple matches at eps=0.25") and d == t for s, d, t in stages)
    write_pair_result(few, tmp_path / "few.h5")
    assert read_pair_result(tmp_path / "few.h5").undersampled
    with h5py.File(tmp_path / "few.h5", "a") as h5:  # a file written before the flag existed
        del h5.attrs["min_rows_per_unit"]
    old = read_pair_result(tmp_path / "few.h5")
    assert old.min_rows_per_unit == 0.0 and not old.undersampled
    few.layer = "conv1"
    frame = similarity_frame([few, enough])
    assert list(frame["undersampled"]) == [True, False]
    table = summarize_similarity(frame, ["conv1", "fc1"]).set_index("layer")
    assert table.loc["conv1", "undersampled"] and not table.loc["fc1", "undersampled"]
    assert table.loc["conv1", "rows_per_unit"] == pytest.approx(60 / live)


def test_flagged_layer_in_figures_and_table(tmp_path):
    """The table, Fig. 1 and Fig. 2 steps take a flagged layer (no simple matches) beside a
    searched one."""
    from types import SimpleNamespace

    from convergent.steps import figure_wang2018_fig1, figure_wang2018_fig2, table_wang2018_similarity
    from convergent.subspace_layers import compare_layer
    from convergent.subspace_results import write_pair_result

    X, Y, _ = planted_pair(400, [2, 3], private_x=3, private_y=3, noise=0.05, seed=3)
    paths = []
    for layer, rows in (("conv1", 400), ("fc1", 40)):
        with pytest.warns() if rows < 100 else _nothing():
            r = compare_layer(X[:rows], Y[:rows], layer=layer, a="seed0", b="seed1", kind="fc",
                              eps_grid=[0.25, 0.5], simple_eps=[0.25])
        paths.append(tmp_path / f"{layer}.h5")
        write_pair_result(r, paths[-1])
    params = SimpleNamespace(layers=["conv1", "fc1"], figures={"dpi": 50}, statistics=STATISTICS)
    stem = tmp_path / "t"
    table_wang2018_similarity.main(SimpleNamespace(pairs=paths, baseline=[], replicates=[]),
                                   SimpleNamespace(csv=f"{stem}.csv"), params, [])
    import pandas as pd

    table = pd.read_csv(f"{stem}.csv")
    assert table.groupby("layer")["undersampled"].first().to_dict() == {"conv1": False, "fc1": True}
    for step, inputs in ((figure_wang2018_fig1, SimpleNamespace(pairs=paths, baseline=[], replicates=[])),
                         (figure_wang2018_fig2, SimpleNamespace(pairs=paths))):
        out = [tmp_path / f"{step.__name__}.png"]
        step.main(inputs, out, params, [])
        assert out[0].stat().st_size > 1000


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

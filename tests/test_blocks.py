"""convergent.blocks: a replicate from weighted block statistics equals the measure recomputed by
the project's own functions on the resampled raw rows (to 1e-10), for linear CKA, CCA, SVCCA,
PWCCA, Procrustes, matching correlation, s(eps) and mutual information; the streamed pass, the
files and the hook in convergent.correlation."""

import doctest

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from conftest import write_conv_activations
from convergent import blocks as bl
from convergent import similarity as sim
from convergent import statistics as st
from convergent.count_blocks import CountBlocks
from convergent.correlation import joint_layer_statistics
from convergent.matching import match_frame, summarize_match
from convergent.mutual_information import bin_codes, mutual_information_from_codes
from convergent.subspace import SubspaceProblem, similarity as subspace_similarity
from convergent.subspace_testing import planted_pair

N_IMAGES, PER_IMAGE, N_BLOCKS = 60, 4, 15


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1, user_api="blas"):  # many small products (see test_statistics)
        yield


def conv_like(seed=0, p=6, q=5):
    """Paired ReLU activations, images x positions, with structure shared by the two nets, and in
    X one unit that fires in one image only (so it is all-zero in replicates that miss it)."""
    rng = np.random.default_rng(seed)
    image = np.repeat(np.arange(N_IMAGES), PER_IMAGE)
    latent = rng.normal(size=(N_IMAGES, 4))[image] + 0.5 * rng.normal(size=(len(image), 4))
    x = np.maximum(latent @ rng.normal(size=(4, p)) + 0.3 * rng.normal(size=(len(image), p)), 0) + 5.0
    y = np.maximum(latent @ rng.normal(size=(4, q)) + 0.3 * rng.normal(size=(len(image), q)), 0)
    x[:, 0] = 0.0
    x[image == 7, 0] = rng.uniform(1, 2, PER_IMAGE)
    return x, y, image


def li_table1(x, y):
    """Li et al.'s Table-1 row as the `match` step computes it from a correlation matrix."""
    return summarize_match(match_frame(sim.correlation_from_cov(*sim.covariances(x, y))))


def draws(seed=1, n=6):
    rng = np.random.default_rng(seed)
    out = [np.bincount(rng.integers(0, N_BLOCKS, N_BLOCKS), minlength=N_BLOCKS) for _ in range(n)]
    return np.array(out + [np.ones(N_BLOCKS, int)])  # and the full sample


@pytest.mark.parametrize("measure, recompute", [
    ("linear_cka", sim.linear_cka),
    ("cca", sim.cca_mean),
    ("svcca", sim.svcca),
    ("pwcca", sim.pwcca),
    ("procrustes", sim.procrustes_distance),
    ("matching", sim.matching_correlation),
    ("semi", lambda x, y: li_table1(x, y)["semi"]),
    ("overlap", lambda x, y: li_table1(x, y)["overlap"]),
])
def test_replicate_from_blocks_equals_recompute_from_resampled_rows(measure, recompute):
    x, y, image = conv_like()
    row_block = bl.input_blocks(N_IMAGES, N_BLOCKS, seed=3)[image]
    pair = bl.PairBlocks.from_rows(x, y, row_block, N_BLOCKS)
    weights = draws()
    got = bl.replicates(pair, measure, weights)
    for w, value in zip(weights, got):
        rows = bl.resampled_rows(row_block, w)
        assert value == pytest.approx(recompute(x[rows], y[rows]), abs=1e-10)
    if measure == "linear_cka":  # the vectorised paths are the *_cov function on the covariances
        np.testing.assert_allclose(got, [sim.linear_cka_cov(*pair.covariances(w)) for w in weights], atol=1e-13)
        # block kernels, from moments streamed in small chunks (shift far from the mean)
        streamed = bl.BlockMoments(x.shape[1] + y.shape[1], N_BLOCKS)
        for start in range(0, len(x), 8):
            streamed.update(np.hstack([x, y])[start:start + 8], row_block[start:start + 8])
        p = x.shape[1]
        kernel = bl.PairBlocks(streamed.rows, streamed.shift[:p], streamed.shift[p:], streamed.sum[:, :p],
                               streamed.sum[:, p:], streamed.cross[:, :p, :p], streamed.cross[:, p:, p:],
                               streamed.cross[:, :p, p:], streamed.absmax[:, :p], streamed.absmax[:, p:])
        np.testing.assert_allclose(kernel.linear_cka_kernel(weights), got, atol=1e-12)
        many = np.repeat(weights, 3, axis=0)  # as many replicates as blocks: measures() takes the kernel path
        np.testing.assert_allclose(kernel.measures(["linear_cka"], many)["linear_cka"], np.repeat(got, 3), atol=1e-12)


def test_replicates_see_units_that_are_all_zero_in_the_resample_as_dead():
    x, y, image = conv_like()
    row_block = bl.input_blocks(N_IMAGES, N_BLOCKS, seed=3)[image]
    pair = bl.PairBlocks.from_rows(x, y, row_block, N_BLOCKS)
    w = np.ones(N_BLOCKS, int)
    w[row_block[image == 7][0]] = 0  # the block holding the only image where unit 0 fires
    corr = next(pair.correlations(w[None]))
    assert np.isnan(corr[0]).all() and np.isfinite(corr[1:]).all()
    cxx, _, cxy = pair.covariances(w)
    assert (cxx[0] == 0).all() and (cxy[0] == 0).all()
    assert (pair.gram(w)[0] == 0).all()


def test_subspace_similarity_from_gram_blocks_equals_recompute():
    x, y, _ = planted_pair(N_IMAGES * PER_IMAGE, [2, 3], private_x=2, private_y=1, noise=0.02, seed=4)
    x = np.c_[x, np.zeros(len(x))]  # a dead unit: dropped on both sides
    x[:PER_IMAGE, -1] = 1.0  # ... except in image 0
    image = np.repeat(np.arange(N_IMAGES), PER_IMAGE)
    row_block = bl.input_blocks(N_IMAGES, N_BLOCKS, seed=5)[image]
    pair = bl.PairBlocks.from_rows(x, y, row_block, N_BLOCKS)
    weights = draws(seed=6, n=4)
    for eps in (0.1, 0.3):
        got = bl.replicates(pair, "subspace", weights, epsilon=eps)
        for w, value in zip(weights, got):
            rows = bl.resampled_rows(row_block, w)
            assert value == pytest.approx(subspace_similarity(x[rows], y[rows], eps, device="cpu"), abs=1e-10)
            from_gram = SubspaceProblem.from_gram(pair.gram(w), x.shape[1], device="cpu").max_match(eps)
            direct = SubspaceProblem(x[rows], y[rows], device="cpu").max_match(eps)
            assert (from_gram.x, from_gram.y, from_gram.dropped_x) == (direct.x, direct.y, direct.dropped_x)
    np.testing.assert_array_equal(pair.subspace_curves(weights, (0.3, 0.1))[:, 1],
                                  bl.replicates(pair, "subspace", weights, epsilon=0.1))
    assert 0 < got[-1] < 1


def test_mutual_information_from_count_blocks_equals_recompute_with_edges_fixed():
    x, y, image = conv_like(seed=7)
    bins = 5
    codes_a, codes_b = bin_codes(x, bins, device="cpu"), bin_codes(y, bins, device="cpu")  # edges: full sample
    row_block = bl.input_blocks(N_IMAGES, N_BLOCKS, seed=8)[image]
    counts = CountBlocks(x.shape[1], y.shape[1], bins + 1, N_BLOCKS)
    for start in range(0, len(x), 70):  # streamed in chunks
        counts.update(codes_a[start:start + 70], codes_b[start:start + 70], row_block[start:start + 70])
    for w in draws(seed=9):
        rows = bl.resampled_rows(row_block, w)
        expected = mutual_information_from_codes(codes_a[rows], codes_b[rows], bins + 1, device="cpu")
        np.testing.assert_allclose(counts.mutual_information(w), expected, atol=1e-10)
    summary = bl.replicates(counts, "mi_matching", draws(seed=9))
    assert np.isfinite(summary).all() and (summary > 0).all()


def test_count_blocks_round_trip(tmp_path):
    x, y, image = conv_like(seed=10)
    codes_a, codes_b = bin_codes(x, 4, device="cpu"), bin_codes(y, 4, device="cpu")
    input_block = bl.input_blocks(N_IMAGES, N_BLOCKS)
    counts = CountBlocks(x.shape[1], y.shape[1], 5, N_BLOCKS, dead_b=np.arange(y.shape[1]) == 2)
    counts.update(codes_a, codes_b, input_block[image])
    counts.save(tmp_path / "conv1.blocks.h5", input_block, layer="conv1")
    back = CountBlocks.load(tmp_path / "conv1.blocks.h5")
    w = draws()[0]
    np.testing.assert_array_equal(back.mutual_information(w), counts.mutual_information(w))
    assert np.isnan(back.mutual_information(w)[:, 2]).all()
    with pytest.raises(ValueError, match="not a convergent.blocks/moments file"):
        bl.BlockMoments.load(tmp_path / "conv1.blocks.h5")


def test_row_resampling_for_measures_without_block_statistics():
    x, y, image = conv_like(seed=11)
    row_block = bl.input_blocks(N_IMAGES, N_BLOCKS)[image]
    weights = draws(seed=12, n=3)
    rbf = bl.row_statistic(x, y, row_block, "rbf_cka", sigma=0.8)(weights)
    for w, value in zip(weights, rbf):
        rows = bl.resampled_rows(row_block, w)
        assert value == pytest.approx(sim.rbf_cka(x[rows], y[rows], sigma=0.8), abs=1e-12)
    # RSA on one row per image: copies of one image are not compared with each other
    xm, ym = (np.stack([v[image == i].mean(0) for i in range(N_IMAGES)]) for v in (x, y))
    blocks = bl.input_blocks(N_IMAGES, N_BLOCKS)
    rsa = bl.row_statistic(xm, ym, blocks, "rsa")(weights)
    assert bl.row_statistic(xm, ym, blocks, "rsa")(np.ones((1, N_BLOCKS)))[0] == pytest.approx(sim.rsa(xm, ym))
    for w, value in zip(weights, rsa):
        rows = bl.resampled_rows(blocks, w)
        dx, dy = sim.rdm(xm[rows]), sim.rdm(ym[rows])
        i, j = np.triu_indices(len(rows), k=1)
        keep = rows[i] != rows[j]
        from scipy.stats import spearmanr
        assert value == pytest.approx(spearmanr(dx[i, j][keep], dy[i, j][keep]).statistic, abs=1e-12)


def test_streamed_pass_files_and_correlation_hook(tmp_path):
    rng = np.random.default_rng(13)
    n_images, per_image, units = 24, 3, 4
    positions = np.stack([np.repeat(np.arange(n_images), per_image), rng.integers(0, 5, n_images * per_image),
                          rng.integers(0, 5, n_images * per_image)], 1)
    paths, samples = [], []
    for seed in (0, 1, 2):
        samples.append(np.maximum(rng.normal(size=(len(positions), units)), 0).astype(np.float32))
        paths.append(tmp_path / f"seed{seed}.h5")
        write_conv_activations(paths[-1], seed, samples[-1], positions, np.arange(n_images) + 100, 5, (3, 1, 0))
    input_block = bl.input_blocks(n_images, 6, seed=2)
    nets = ["seed0", "seed1", "seed2"]
    streamed = bl.block_layer_moments(paths, nets, "conv1", input_block, chunk_rows=10)
    joint = np.hstack(samples).astype(np.float64)
    once = bl.BlockMoments.from_rows(joint, input_block[positions[:, 0]], 6, nets)
    w = np.random.default_rng(1).integers(0, 3, 6)
    for a, b in (("seed0", "seed1"), ("seed2", "seed0")):  # shifts differ, the moments do not
        np.testing.assert_allclose(streamed.pair(a, b).gram(w), once.pair(a, b).gram(w), rtol=1e-12)
        for got, expected in zip(streamed.pair(a, b).covariances(w), once.pair(a, b).covariances(w)):
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    streamed.save(tmp_path / "stats" / "conv1.blocks.h5", input_block, layer="conv1", block_seed=2)
    pair = bl.BlockMoments.load_pair(tmp_path / "stats" / "conv1.blocks.h5", "seed2", "seed0")
    rows = bl.resampled_rows(input_block[positions[:, 0]], w)
    for got, expected in zip(pair.covariances(w), sim.covariances(joint[rows, 8:], joint[rows, :4])):
        np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_array_equal(bl.BlockMoments.read_input_block(tmp_path / "stats" / "conv1.blocks.h5"), input_block)
    with pytest.raises(KeyError, match="seed7"):
        bl.BlockMoments.load_pair(tmp_path / "stats" / "conv1.blocks.h5", "seed7", "seed0")
    # the hook: same statistics, bit for bit, and the same blocks, from one read
    plain = joint_layer_statistics(paths, [0, 1, 2], "conv1", chunk_rows=10)
    hooked_blocks = bl.BlockMoments(3 * units, 6, nets)
    hooked = joint_layer_statistics(paths, [0, 1, 2], "conv1", chunk_rows=10, blocks=hooked_blocks,
                                    row_block=bl.row_blocks(paths[0], "conv1", input_block))
    for name in ("mean", "std", "cov", "corr", "dead"):
        np.testing.assert_array_equal(getattr(hooked, name), getattr(plain, name))
    np.testing.assert_array_equal(hooked_blocks.cross, streamed.cross)


def test_interval_of_a_layer_statistic_from_blocks():
    x, y, image = conv_like(seed=14)
    blocks = bl.input_blocks(N_IMAGES, N_BLOCKS)
    moments = bl.BlockMoments.from_rows(np.hstack([x[:, :5], y]), blocks[image], N_BLOCKS, ["seed0", "seed1"])
    pair = moments.pair("seed0", "seed1")
    stat = st.pairwise([bl.pair_statistic(pair, "cca")], [(0, 1)], n_blocks=N_BLOCKS)
    ci = st.bootstrap(stat, replicates=200)
    assert ci.lo <= ci.estimate <= ci.hi and ci.over == "inputs"
    assert ci.estimate == pytest.approx(sim.cca_mean(x[:, :5], y), abs=1e-10)
    with pytest.raises(ValueError, match="row_statistic"):
        bl.pair_statistic(pair, "rbf_cka")


def test_input_blocks_are_a_random_balanced_partition():
    blocks = bl.input_blocks(103, 10, seed=1)
    assert np.bincount(blocks).min() == 10 and np.bincount(blocks).max() == 11
    np.testing.assert_array_equal(blocks, bl.input_blocks(103, 10, seed=1))
    assert not (np.diff(blocks) >= 0).all()  # not contiguous runs: probe sets can be sorted by class
    assert bl.input_blocks(5, 10).max() == 4


def test_docstring_examples():
    from convergent import count_blocks

    for module in (bl, count_blocks):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_layer_to_layer_difference_is_paired_over_seeds_and_inputs():
    """Two layers of four seeds on the same probe images: the difference of their mean pairwise
    CCA is bootstrapped on shared draws of seeds and image blocks."""
    rng = np.random.default_rng(15)
    image = np.repeat(np.arange(N_IMAGES), PER_IMAGE)
    blocks = bl.input_blocks(N_IMAGES, N_BLOCKS)[image]
    seeds = [0, 1, 2, 3]
    pairs = [(a, b) for a in seeds for b in seeds if a < b]
    shared = rng.normal(size=(len(image), 3))
    layers = {}
    for layer, noise in (("conv1", 0.3), ("conv3", 1.5)):
        nets = [shared @ rng.normal(size=(3, 4)) + noise * rng.normal(size=(len(image), 4)) for _ in seeds]
        moments = bl.BlockMoments.from_rows(np.hstack(nets), blocks, N_BLOCKS, seeds)
        layers[layer] = st.pairwise([bl.pair_statistic(moments.pair(a, b), "cca") for a, b in pairs], pairs,
                                    n_blocks=N_BLOCKS, label=layer)
    out = st.bootstrap({**layers, "conv1 - conv3": layers["conv1"] - layers["conv3"]}, replicates=300, seed=2)
    diff = out["conv1 - conv3"]
    np.testing.assert_allclose(diff.distribution, out["conv1"].distribution - out["conv3"].distribution, atol=1e-12)
    assert diff.over == "seeds and inputs" and diff.lo > 0  # conv1's units are the less noisy
    assert diff.estimate == pytest.approx(out["conv1"].estimate - out["conv3"].estimate)


def test_stored_pair_replicates_give_the_same_intervals_as_live_block_statistics():
    """Per-pair jobs save estimate, replicates and jackknife; a table job combines them."""
    x, y, image = conv_like(seed=16)
    blocks = bl.input_blocks(N_IMAGES, N_BLOCKS)
    nets = [x[:, :3], x[:, 3:], y[:, :3], y[:, 2:5]]
    moments = bl.BlockMoments.from_rows(np.hstack(nets), blocks[image], N_BLOCKS, range(4))
    pairs = [(a, b) for a in range(4) for b in range(4) if a < b]
    live = [bl.pair_statistic(moments.pair(a, b), "matching") for a, b in pairs]
    draws = st.draw(range(4), N_BLOCKS, 300, seed=9, min_distinct={"seeds": 2}).block_counts
    saved = []
    for fn in live:  # what each per-pair job would write
        leave_one_out = np.ones((N_BLOCKS, N_BLOCKS)) - np.eye(N_BLOCKS)
        saved.append(st.stored(fn(np.ones((1, N_BLOCKS)))[0], draws, fn(draws), fn(leave_one_out)))
    for method in ("percentile", "bca"):
        a = st.bootstrap(st.pairwise(live, pairs, n_blocks=N_BLOCKS), replicates=300, seed=9, method=method)
        b = st.bootstrap(st.pairwise(saved, pairs, n_blocks=N_BLOCKS), replicates=300, seed=9, method=method)
        assert (a.estimate, a.lo, a.hi) == (b.estimate, b.lo, b.hi)
    with pytest.raises(KeyError, match="other draws"):
        st.bootstrap(st.pairwise(saved, pairs, n_blocks=N_BLOCKS), replicates=300, seed=10)


def test_a_unit_silent_in_every_drawn_block_is_dead_despite_rounding():
    """Regression: var = E[(x - shift)^2] - (E[x] - shift)^2 leaves a rounding residue for a unit
    that is zero on every drawn row but not elsewhere (an fc ReLU firing on a few inputs); the
    replicate must treat it as dead, as the raw-row computation does, not correlate its residue.
    Found on the default run's fc1: 802 of 1,000 matching replicates of a pair were off by up to 0.006."""
    rng = np.random.default_rng(5)
    n_images = 200
    latent = rng.normal(size=(n_images, 3))
    x = np.maximum(latent @ rng.normal(size=(3, 12)) + 0.2 * rng.normal(size=(n_images, 12)), 0)
    y = np.maximum(latent @ rng.normal(size=(3, 12)) + 0.2 * rng.normal(size=(n_images, 12)), 0)
    sparse = rng.choice(n_images, 2, replace=False)
    x[:, :4] = 0.0
    x[np.ix_(sparse, np.arange(4))] = rng.uniform(0.1, 37.0, (2, 4))  # four units alive on 2 inputs only
    input_block = bl.input_blocks(n_images, 20, seed=1)
    moments = bl.BlockMoments(24, 20, ("x", "y"))
    joint = np.hstack([x, y])
    for start in range(0, n_images, 64):  # streamed in chunks, as block_layer_moments reads files
        moments.update(joint[start:start + 64], input_block[start:start + 64])
    pair = moments.pair("x", "y")
    weights = st.draw({"x": ("x",)}, 20, 300, 0).block_counts
    silent = (weights[:, np.unique(input_block[sparse])] == 0).all(1)
    assert silent.sum() > 10
    got = bl.replicates(pair, "matching", weights)
    for r in np.flatnonzero(silent)[:20]:
        rows = bl.resampled_rows(input_block, weights[r])
        assert got[r] == pytest.approx(sim.matching_correlation(x[rows], y[rows]), abs=1e-10)
        assert np.isnan(next(pair.correlations(weights[r][None]))[:4]).all()

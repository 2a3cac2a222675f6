"""convergent.mutual_information against sklearn and numpy.histogram2d (Li §3.2, footnote 6)."""

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

import convergent.mutual_information as mi_module
from convergent.mutual_information import (
    bin_codes,
    joint_counts,
    mutual_information,
    mutual_information_from_codes,
    percentile_edges,
)


def relu_pair(n=3000, n_a=6, n_b=5, seed=0):
    """Paired ReLU activations with a few strongly dependent unit pairs and some independent ones."""
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.normal(size=(n, n_a)), 0)
    b = np.maximum(rng.normal(size=(n, n_b)), 0)
    b[:, 0] = np.maximum(a[:, 2] + 0.2 * rng.normal(size=n), 0)
    b[:, 1] = np.maximum(-a[:, 0] + rng.normal(size=n), 0)  # dependence that is far from linear
    return a, b


def test_bins_hold_five_percent_of_nonzero_mass():
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(40_000, 3)), 0)
    x[:, 2] = rng.exponential(size=40_000)  # no zeros at all
    codes = bin_codes(x)
    for unit in range(3):
        nonzero = x[:, unit] > 1e-6
        assert np.all(codes[~nonzero, unit] == 0)
        counts = np.bincount(codes[nonzero, unit], minlength=21)[1:]
        assert counts.shape == (20,)
        np.testing.assert_allclose(counts / nonzero.sum(), 0.05, atol=1e-3)


def test_bin_codes_are_monotone_and_special_bin_is_right_closed():
    x = np.array([[-3.0], [0.0], [1e-6], [np.nextafter(1e-6, 1)], [0.5], [2.0], [7.0]])
    codes = bin_codes(x, n_bins=4)[:, 0]
    assert codes[:3].tolist() == [0, 0, 0]
    assert np.all(codes[3:] >= 1) and np.all(np.diff(codes[3:].astype(int)) >= 0)
    assert codes.max() == 4
    rng = np.random.default_rng(2)
    y = rng.normal(size=(1000, 1))
    order = np.argsort(y[:, 0])
    assert np.all(np.diff(bin_codes(y)[order, 0].astype(int)) >= 0)


def test_percentile_edges_follow_numpy_quantile():
    x = np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=float)
    np.testing.assert_allclose(percentile_edges(x, n_bins=3), np.quantile(np.arange(1, 10), [1 / 3, 2 / 3]))
    assert percentile_edges(np.zeros(5)).size == 0


@pytest.mark.parametrize("seed", range(2))
def test_mi_equals_sklearn_pair_by_pair(seed):
    a, b = relu_pair(seed=seed)
    codes_a, codes_b = bin_codes(a), bin_codes(b)
    got = mutual_information_from_codes(codes_a, codes_b, 21)
    expected = np.array([[mutual_info_score(codes_a[:, i], codes_b[:, j]) for j in range(b.shape[1])] for i in range(a.shape[1])])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # The two dependent pairs stand out against the independent ones (plug-in bias ~0.07 nats).
    top_two = np.argsort(got, axis=None)[-2:]
    assert {np.unravel_index(k, got.shape) for k in top_two} == {(2, 0), (0, 1)}


def test_joint_counts_equal_histogram2d_on_raw_values():
    a, b = relu_pair(n=2000, seed=3)
    counts = joint_counts(bin_codes(a), bin_codes(b), 21)

    def edges(x):
        # histogram2d bins are [lo, hi); nextafter turns our (lo, hi] bins into exactly those.
        inner = np.nextafter(np.r_[1e-6, percentile_edges(x)], np.inf)
        return np.r_[x.min() - 1, inner, x.max() + 1]

    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            hist, _, _ = np.histogram2d(a[:, i], b[:, j], bins=[edges(a[:, i]), edges(b[:, j])])
            np.testing.assert_array_equal(counts[i, :, j, :], hist)


def test_blocking_and_every_gemm_path_give_the_same_result(monkeypatch):
    a, b = relu_pair(n=1500, n_a=7, n_b=5, seed=4)
    codes_a, codes_b = bin_codes(a), bin_codes(b)
    whole = mutual_information_from_codes(codes_a, codes_b, 21, block_units=128)
    blocked = mutual_information_from_codes(codes_a, codes_b, 21, block_units=2)
    np.testing.assert_allclose(whole, blocked, rtol=0, atol=1e-13)  # only summation order differs
    # Large layers on CPU go through torch's int8 GEMM; force it for this small one.
    pytest.importorskip("torch")
    monkeypatch.setattr(mi_module, "TORCH_CPU_WORK", 0)
    assert isinstance(mi_module._engine(codes_a, codes_b, 21, "cpu"), mi_module._Torch)
    np.testing.assert_allclose(mutual_information_from_codes(codes_a, codes_b, 21, block_units=3), whole, atol=1e-12)
    # The float32 GEMM (the GPU path), with samples chunked, checked here on CPU.
    engine = mi_module._Torch(codes_a, codes_b, 21, "cpu")
    engine.int8, engine.dtype, engine.chunk = False, engine.torch.float32, 400
    np.testing.assert_allclose(engine.counts(0, 7, 0, 5).numpy(),
                               joint_counts(codes_a, codes_b, 21).reshape(7 * 21, 5 * 21), atol=0)


def test_identical_nets_mi_diagonal_is_entropy_and_row_maximum():
    a, _ = relu_pair(n=2000, seed=5)
    mi = mutual_information(a, a, n_samples=None)
    codes = bin_codes(a)
    entropy = [mutual_info_score(codes[:, i], codes[:, i]) for i in range(a.shape[1])]
    np.testing.assert_allclose(np.diag(mi), entropy, atol=1e-12)
    assert np.all(mi.argmax(axis=1) == np.arange(a.shape[1]))
    np.testing.assert_allclose(mi, mi.T, atol=1e-12)


def test_mutual_information_samples_paired_rows_and_flags_dead_units():
    a, b = relu_pair(n=4000, seed=6)
    a[:, 3] = 0.0  # a dead ReLU
    mi = mutual_information(a, b, n_samples=1000, seed=11)
    assert mi.shape == (6, 5)
    assert np.isnan(mi[3]).all() and not np.isnan(np.delete(mi, 3, axis=0)).any()
    rows = np.sort(np.random.default_rng(11).choice(4000, size=1000, replace=False))
    expected = mutual_information_from_codes(bin_codes(a[rows]), bin_codes(b[rows]), 21)
    np.testing.assert_allclose(np.delete(mi, 3, axis=0), np.delete(expected, 3, axis=0), atol=1e-12)
    np.testing.assert_array_equal(mutual_information(a, b, n_samples=1000, seed=11), mi)
    every_row = mutual_information_from_codes(bin_codes(a), bin_codes(b), 21)
    for n_samples in (None, 4000, 5000):  # every row, in order
        np.testing.assert_allclose(mutual_information(a, b, n_samples=n_samples)[:3], every_row[:3], atol=1e-12)


def test_mi_of_independent_units_is_near_zero():
    rng = np.random.default_rng(7)
    a = np.maximum(rng.normal(size=(20_000, 3)), 0)
    b = np.maximum(rng.normal(size=(20_000, 3)), 0)
    mi = mutual_information(a, b, n_samples=None)
    # Plug-in bias is about (bins_a - 1)(bins_b - 1) / (2N) = 400 / 40000 nats.
    assert np.all(mi < 0.03)


def reference_codes(x, n_bins=20):
    """Per unit: np.quantile edges of the non-zero values, then a loop over samples."""
    codes = np.zeros(x.shape, dtype=int)
    for unit in range(x.shape[1]):
        edges = percentile_edges(x[:, unit], n_bins)
        for row, value in enumerate(x[:, unit]):
            codes[row, unit] = 0 if value <= 1e-6 else 1 + sum(edge < value for edge in edges)
    return codes


def test_bin_codes_equal_per_unit_numpy_reference():
    rng = np.random.default_rng(8)
    x = np.maximum(rng.normal(size=(700, 6)), 0)
    x[:, 1] = np.round(x[:, 1], 1)  # many ties: coinciding edges and values exactly on edges
    x[:5, 2] = 1e-6
    x[:, 3] = 0.0
    x[:1, 4] = 3.0  # a single non-zero value
    x[:, 4] = np.where(np.arange(700) < 1, 3.0, 0.0)
    np.testing.assert_array_equal(bin_codes(x, block_units=4), reference_codes(x))
    np.testing.assert_array_equal(bin_codes(x, n_bins=7), reference_codes(x, n_bins=7))
    # The torch implementation (the GPU path), run here on CPU.
    pytest.importorskip("torch")
    torch_codes = mi_module._bin_block_torch(np.ascontiguousarray(x.T), 20, 1e-6, "cpu").T
    np.testing.assert_array_equal(torch_codes, reference_codes(x))

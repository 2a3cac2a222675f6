"""Correlation against numpy.corrcoef; streaming equals one-shot; dead units are NaN, not matched."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from convergent.correlation import LayerStats, StreamingMoments, correlation, joint_layer_statistics
from convergent.activations import read_samples
from convergent.extraction import extract_activations
from convergent.models import build_model


def test_matches_numpy_corrcoef():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    y = x[:, :4] @ rng.normal(size=(4, 5)) + rng.normal(size=(500, 5))
    np.testing.assert_allclose(correlation(x, y), np.corrcoef(x, y, rowvar=False)[:6, 6:], atol=1e-12)
    np.testing.assert_allclose(correlation(x), np.corrcoef(x, rowvar=False), atol=1e-12)


def test_streaming_equals_one_shot_with_large_offsets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 5)) * 1e-3 + 1e4  # tiny spread on a large mean: cancellation-prone
    given = x.copy()
    moments = StreamingMoments(5)
    moments.block_rows = 50  # chunks are converted and shifted in row blocks that do not divide them
    for start in range(0, 1000, 137):
        moments.update(x[start:start + 137])
    np.testing.assert_allclose(moments.cov, np.cov(x, rowvar=False, ddof=0), rtol=1e-8)
    np.testing.assert_allclose(moments.mean, x.mean(0), rtol=1e-14)
    np.testing.assert_array_equal(x, given)  # the shift is subtracted from a copy, never the caller's rows


def test_dead_units_are_nan():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(size=(200, 4)), 0)
    x[:, 2] = 0.0
    corr = correlation(x, x)
    assert np.isnan(corr[2]).all() and np.isnan(corr[:, 2]).all()
    live = [0, 1, 3]
    np.testing.assert_allclose(np.diag(corr)[live], 1.0)


def test_joint_statistics_of_files(tmp_path):
    torch.manual_seed(0)
    images = torch.randn(12, 1, 28, 28)
    cfg = {"positions_per_image": 6, "position_seed": 0, "top_k": 2, "batch_size": 5, "dtype": "float32"}
    paths = []
    for seed in (3, 5, 9):
        torch.manual_seed(seed)
        model = build_model("small_cnn", 1, 10, 28).eval()
        paths.append(tmp_path / f"seed{seed}.h5")
        extract_activations(model, TensorDataset(images, torch.zeros(12)), np.arange(12), ["conv2"], paths[-1],
                            cfg, {"seed": seed}, 1, 28, torch.device("cpu"), progress=False)
    stats = joint_layer_statistics(paths, [3, 5, 9], "conv2", chunk_rows=7)
    stats.save(tmp_path / "conv2.h5")
    stats = LayerStats.load(tmp_path / "conv2.h5")
    samples = [read_samples(p, "conv2") for p in paths]
    pair = stats.pair(5, 9)
    expected = np.corrcoef(np.hstack([samples[1], samples[2]]), rowvar=False)
    n = samples[0].shape[1]
    live_a, live_b = ~pair.dead_a, ~pair.dead_b
    np.testing.assert_allclose(pair.corr_ab[np.ix_(live_a, live_b)], expected[:n, n:][np.ix_(live_a, live_b)], atol=1e-10)
    np.testing.assert_allclose(pair.mean_a, samples[1].mean(0), atol=1e-12)
    np.testing.assert_allclose(pair.std_b, samples[2].std(0), atol=1e-10)
    assert stats.n_samples == 72 and stats.units == n
    np.testing.assert_array_equal(pair.dead_a, samples[1].std(0) == 0)
    with pytest.raises(KeyError, match="seed 4"):
        stats.pair(4, 5)


def test_extraction_and_statistics_report_progress(tmp_path):
    from support.progress import Recorder

    images = torch.randn(12, 1, 28, 28)
    cfg = {"positions_per_image": 6, "position_seed": 0, "top_k": 2, "batch_size": 5, "dtype": "float32"}
    paths, extracted = [], Recorder()
    for seed in (3, 5):
        torch.manual_seed(seed)
        model = build_model("small_cnn", 1, 10, 28).eval()
        paths.append(tmp_path / f"seed{seed}.h5")
        progress = extracted if seed == 3 else None
        extract_activations(model, TensorDataset(images, torch.zeros(12)), np.arange(12), ["conv2"], paths[-1],
                            cfg, {"seed": seed}, 1, 28, torch.device("cpu"), progress=progress)
    extracted.check(3)  # 12 images in batches of 5
    read = Recorder()
    joint_layer_statistics(paths, [3, 5], "conv2", chunk_rows=7, progress=read)
    read.check(12 * 6)

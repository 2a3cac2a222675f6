"""The activation HDF5 contract: paired rows across networks, values equal to a direct forward
pass, and top activations equal to a brute-force search over every position."""

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from convergent.activations import (check_paired, layer_attrs, layer_names, read_input_means, read_positions,
                                    read_samples,
                                    read_top_activations, root_attrs, sample_positions)
from convergent.extraction import extract_activations
from convergent.models import build_model

CFG = {"positions_per_image": 5, "position_seed": 11, "top_k": 3, "batch_size": 4, "dtype": "float32"}
LAYERS = ["conv1", "conv3", "fc1"]


def _extract(tmp_path, seed, images, cfg=CFG, name=None):
    torch.manual_seed(seed)
    model = build_model("small_cnn", 1, 10, 28).eval()
    path = tmp_path / (name or f"seed{seed}.h5")
    extract_activations(model, TensorDataset(images, torch.zeros(len(images))), np.arange(len(images)) * 2,
                        LAYERS, path, cfg, {"seed": seed, "architecture": "small_cnn"}, 1, 28,
                        torch.device("cpu"), progress=False)
    return model, path


def _full_maps(model, images):
    modules, maps = dict(model.named_modules()), {}
    hooks = [modules[model.probe_points[layer]].register_forward_hook(
        lambda _m, _i, out, layer=layer: maps.__setitem__(layer, out.double().numpy())) for layer in LAYERS]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return maps


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("act")
    images = torch.randn(10, 1, 28, 28)
    return images, [_extract(tmp, seed, images) for seed in (0, 1)]


def test_rows_are_paired_across_networks(extracted):
    _, [(_, a), (_, b)] = extracted
    assert layer_names(a) == LAYERS
    for layer in ("conv1", "conv3"):
        np.testing.assert_array_equal(read_positions(a, layer), read_positions(b, layer))
        positions = read_positions(a, layer)
        assert positions.shape == (10 * 5, 3)
        assert np.all(np.bincount(positions[:, 0]) == 5)
        # distinct positions within each image
        assert len({tuple(p) for p in positions}) == len(positions)
    check_paired([a, b], "conv3")
    assert not np.array_equal(read_samples(a, "conv1"), read_samples(b, "conv1"))  # different networks


def test_samples_equal_direct_forward(extracted):
    images, [(model, path), _] = extracted
    maps = _full_maps(model, images)
    for layer in ("conv1", "conv3"):
        p = read_positions(path, layer)
        expected = maps[layer][p[:, 0], :, p[:, 1], p[:, 2]]
        np.testing.assert_allclose(read_samples(path, layer), expected, rtol=1e-5, atol=1e-6)
        attrs = layer_attrs(path, layer)
        assert attrs["kind"] == "spatial" and tuple(attrs["shape"]) == maps[layer].shape[1:]
        assert attrs["signed"] is False and attrs["layout"] == "NCHW"  # post-ReLU
    np.testing.assert_allclose(read_samples(path, "fc1"), maps["fc1"], rtol=1e-5, atol=1e-6)
    for layer in ("conv1", "conv3"):
        np.testing.assert_allclose(read_input_means(path, layer), maps[layer].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(read_input_means(path, "fc1"), read_samples(path, "fc1"))
    assert layer_attrs(path, "fc1")["kind"] == "vector"
    assert root_attrs(path)["seed"] == 0
    with h5py.File(path) as h5:
        np.testing.assert_array_equal(h5["probe/image_index"][()], np.arange(10) * 2)


def test_top_activations_equal_brute_force(extracted):
    images, [(model, path), _] = extracted
    maps = _full_maps(model, images)["conv3"]
    top = read_top_activations(path, "conv3")
    n, c, h, w = maps.shape
    for unit in range(c):
        values = maps[:, unit].ravel()
        best = np.sort(values)[::-1][:3]
        np.testing.assert_allclose(top[unit]["value"], best, rtol=1e-5)
        for record in top[unit]:  # each record points at a position holding its value
            assert maps[record["image"], unit, record["y"], record["x"]] == pytest.approx(record["value"], rel=1e-5)


def test_positions_depend_on_layer_and_seed_only():
    a = sample_positions("conv2", 7, 9, 9, 4, seed=1)
    np.testing.assert_array_equal(a, sample_positions("conv2", 7, 9, 9, 4, seed=1))
    assert not np.array_equal(a, sample_positions("conv3", 7, 9, 9, 4, seed=1))
    assert not np.array_equal(a, sample_positions("conv2", 7, 9, 9, 4, seed=2))
    assert sample_positions("conv2", 2, 2, 2, 10, seed=0).shape == (8, 3)  # capped at all positions


def test_unpaired_files_are_refused(tmp_path, extracted):
    images, [(_, a), _] = extracted
    _, other = _extract(tmp_path, 0, images, {**CFG, "position_seed": 99}, name="other.h5")
    with pytest.raises(ValueError, match="not paired"):
        check_paired([a, other], "conv1")


def test_float16_storage(tmp_path, extracted):
    images, [(_, a), _] = extracted
    _, half = _extract(tmp_path, 0, images, {**CFG, "dtype": "float16"}, name="half.h5")
    with h5py.File(half) as h5:
        assert h5["layers/conv1/samples"].dtype == np.float16
    np.testing.assert_allclose(read_samples(half, "conv1"), read_samples(a, "conv1"), rtol=2e-3, atol=2e-3)


def test_read_samples_picks_sorted_rows_chunk_by_chunk(extracted):
    _, [(_, a), _] = extracted
    every = read_samples(a, "conv1")
    rows = np.array([0, 3, 4, 17, 18, 49])
    for chunk_rows in (1, 4, 7, 1000):  # rows at, inside and across block edges
        np.testing.assert_array_equal(read_samples(a, "conv1", rows, chunk_rows=chunk_rows), every[rows])
    assert read_samples(a, "conv1", np.array([], dtype=int)).shape == (0, every.shape[1])
    np.testing.assert_array_equal(read_samples(a, "conv1", slice(2, 9)), every[2:9])
    for bad in ([3, 1], [1, 1], [50]):
        with pytest.raises(ValueError, match="sorted, distinct and below 50"):
            read_samples(a, "conv1", np.array(bad))


def test_input_means_of_a_map_layer_without_them_is_an_error(tmp_path, extracted):
    import shutil

    _, [(_, a), _] = extracted
    old = tmp_path / "old.h5"
    shutil.copy(a, old)
    with h5py.File(old, "a") as h5:
        del h5["layers/conv1/input_mean"]
    with pytest.raises(ValueError, match="old.h5: layer 'conv1' has no input_mean.*re-extract"):
        read_input_means(old, "conv1")

"""Layers of every kind in the activation contract (maps, channels-last maps, token sequences,
vectors; signed or not), receptive fields of networks nobody described by hand, and the analyses'
readings of kinds: signed MI binning, dead units, patch figures."""

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score
from torch.utils.data import TensorDataset

from conftest import write_conv_activations
from convergent.activations import (layer_attrs, read_input_means, read_positions, read_samples,
                                    read_top_activations)
from convergent.correlation import correlation
from convergent.extraction import extract_activations, token_grid
from convergent.models import load_model
from convergent.mutual_information import bin_codes, mutual_information, mutual_information_from_codes
from convergent.patches import position_box, unit_patches
from convergent.probing import ProbeRunner
from convergent.receptive_fields import receptive_fields

VIT = {"torchvision": "VisionTransformer",
       "kwargs": {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}}
CFG = {"positions_per_image": 5, "position_seed": 3, "top_k": 3, "batch_size": 4, "dtype": "float32"}


def _extract(tmp_path, model_cfg, images, name="net.h5"):
    loaded = load_model(model_cfg, (3, 10, 32), seed=0, probes=True)
    path = tmp_path / name
    extract_activations(loaded.module, TensorDataset(images, torch.zeros(len(images))), np.arange(len(images)),
                        loaded.probes, path, CFG, {"seed": 0}, 3, 32, torch.device("cpu"), progress=False,
                        prepare=loaded.prepare)
    with ProbeRunner(loaded.module, loaded.probes) as runner, torch.no_grad():
        full = {k: v.double().numpy() for k, v in runner(images).items()}
    return loaded, path, full


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cfg = {**VIT, "layers": ["conv_proj", "encoder.layers.encoder_layer_1", "heads"]}
    return (images, *_extract(tmp_path_factory.mktemp("vit"), cfg, images))


def test_token_layers_are_sampled_like_positions(vit_file):
    images, loaded, path, full = vit_file
    layer = "encoder.layers.encoder_layer_1"
    attrs = layer_attrs(path, layer)
    assert attrs["kind"] == "tokens" and attrs["layout"] == "NTC" and tuple(attrs["shape"]) == (32, 17, 1)
    assert attrs["signed"] and tuple(attrs["token_grid"]) == (1, 4, 4)  # class token, then 4x4 patches
    assert tuple(attrs["receptive_field"]) == (32, 0, 0)  # attention: every token sees the whole image
    positions = read_positions(path, layer)
    assert positions.shape == (6 * 5, 3) and positions[:, 1].max() < 17 and (positions[:, 2] == 0).all()
    expected = full[layer][positions[:, 0], :, positions[:, 1], 0]
    np.testing.assert_allclose(read_samples(path, layer), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(read_input_means(path, layer), full[layer].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    top = read_top_activations(path, layer)
    assert (top["x"] == 0).all() and np.allclose(top["value"][:, 0], full[layer].max(axis=(0, 2, 3)), rtol=1e-6)


def test_patch_embedding_is_a_map_with_the_patch_as_field(vit_file):
    _, _, path, full = vit_file
    attrs = layer_attrs(path, "conv_proj")
    assert attrs["kind"] == "spatial" and attrs["signed"] and tuple(attrs["shape"]) == (32, 4, 4)
    # ViT accepts no other input size: measured on the image itself, the patch is the field
    assert tuple(attrs["receptive_field"]) == (8, 8, 0)
    heads = layer_attrs(path, "heads")
    assert heads["kind"] == "vector" and "positions" not in h5py.File(path)["layers/heads"]
    np.testing.assert_allclose(read_samples(path, "heads"), full["heads"], rtol=1e-6, atol=1e-6)


def test_channels_last_maps_in_files(tmp_path):
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cfg = {"torchvision": "convnext_tiny", "layers": ["features.1.0.block.3", "features.1.0"]}
    _, path, full = _extract(tmp_path, cfg, images)
    attrs = layer_attrs(path, "features.1.0.block.3")
    assert attrs["layout"] == "NHWC" and tuple(attrs["shape"]) == (384, 8, 8) and attrs["kind"] == "spatial"
    p = read_positions(path, "features.1.0.block.3")
    np.testing.assert_allclose(read_samples(path, "features.1.0.block.3"),
                               full["features.1.0.block.3"][p[:, 0], :, p[:, 1], p[:, 2]], rtol=1e-5, atol=1e-6)


def test_receptive_fields_of_convnext_agree_with_perturbation():
    """Independent check: an input pixel changes a unit only inside the field the gradient found."""
    loaded = load_model({"torchvision": "convnext_tiny", "layers": ["features.1.0"]}, (3, 10, 32), seed=0,
                        probes=True)
    size, stride, offset = receptive_fields(loaded.module, loaded.probes, 3, 32)["features.1.0"]
    assert (size, stride, offset) == (28, 4, -12)  # 4x4/4 stem, then a 7x7 depthwise conv: 4 + 6*4
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y0 = x0 = 4
    top = y0 * stride + offset
    with ProbeRunner(loaded.module, loaded.probes) as runner, torch.no_grad():
        base = runner(x)["features.1.0"][0, :, y0, x0]
        for pixel, inside in (((top, 10), True), ((top + size - 1, 10), True), ((top - 1, 10), False),
                              ((top + size, 10), False)):
            if not 0 <= pixel[0] < 32:
                continue
            bumped = x.clone()
            bumped[0, :, pixel[0], pixel[1]] += 5.0
            changed = not torch.equal(runner(bumped)["features.1.0"][0, :, y0, x0], base)
            assert changed == inside, pixel


def test_receptive_fields_of_resnet50_and_efficientnet():
    resnet = load_model({"torchvision": "resnet50", "layers": ["conv1", "maxpool", "layer1.0"]}, (3, 10, 64),
                        probes=True)
    fields = receptive_fields(resnet.module, resnet.probes, 3, 64)
    assert fields == {"conv1": (7, 2, -3), "maxpool": (11, 4, -5), "layer1.0": (19, 4, -9)}  # published values
    effnet = load_model({"torchvision": "efficientnet_b0", "layers": ["features.0", "features.1.0"]}, (3, 10, 32),
                        probes=True)
    fields = receptive_fields(effnet.module, effnet.probes, 3, 32)
    assert fields["features.0"] == (3, 2, -1)
    assert fields["features.1.0"] == (32, 0, 0)  # squeeze-and-excitation: global context, the whole image


def test_files_written_before_kinds_existed_stay_readable(tmp_path):
    rng = np.random.default_rng(0)
    positions = np.stack([np.repeat(np.arange(4), 2), rng.integers(0, 3, 8), rng.integers(0, 3, 8)], axis=1)
    samples = np.maximum(rng.normal(size=(8, 3)), 0)
    write_conv_activations(tmp_path / "old.h5", 0, samples, positions, np.arange(4), 3, (3, 1, 0))
    with h5py.File(tmp_path / "old.h5", "a") as h5:  # as the extractor wrote files before kinds
        group = h5["layers/conv1"]
        del group["input_mean"], group.attrs["signed"], group.attrs["layout"]
        group.attrs["kind"] = "conv"
        group.create_dataset("image_mean", data=np.ones((4, 3), dtype=np.float32))
    attrs = layer_attrs(tmp_path / "old.h5", "conv1")
    assert attrs["kind"] == "spatial" and attrs["signed"] is False
    np.testing.assert_array_equal(read_input_means(tmp_path / "old.h5", "conv1"), np.ones((4, 3)))


def test_signed_binning_has_no_zero_bin_and_agrees_with_sklearn():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4000, 3))
    y = np.column_stack([x[:, 1] + 0.3 * rng.normal(size=4000), rng.normal(size=4000)])
    codes = bin_codes(x, n_bins=20, zero_threshold=None)
    for unit in range(3):  # 20 bins of 5 % each over all values, code 0 unused
        edges = np.quantile(x[:, unit], np.arange(1, 20) / 20)
        np.testing.assert_array_equal(codes[:, unit], 1 + np.searchsorted(edges, x[:, unit], side="left"))
        np.testing.assert_array_equal(np.bincount(codes[:, unit], minlength=21), [0] + [200] * 20)
    with_zero_bin = bin_codes(x, n_bins=20)
    assert (with_zero_bin == 0).mean() == pytest.approx(0.5, abs=0.03)  # half the mass in one "ReLU" bin
    mi = mutual_information(x, y, n_samples=None, zero_threshold=None)
    codes_y = bin_codes(y, n_bins=20, zero_threshold=None)
    for i in range(3):
        for j in range(2):
            assert mi[i, j] == pytest.approx(mutual_info_score(codes[:, i], codes_y[:, j]), abs=1e-12)
    assert mi[1, 0] > 0.5 and mi[0, 1] < 0.05
    np.testing.assert_allclose(mi, mutual_information_from_codes(codes, codes_y, 21), atol=1e-12)


def test_dead_units_are_zero_variance_units_of_any_sign():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3))
    x[:, 1] = -0.7  # a constant negative unit: dead, though never zero
    corr = correlation(x, x)
    assert np.isnan(corr[1]).all() and not np.isnan(corr[0, 2])
    mi = mutual_information(x, x, n_samples=None, zero_threshold=None)
    assert np.isnan(mi[1]).all() and np.isnan(mi[:, 1]).all() and not np.isnan(mi[0, 2])


def test_token_grid_reading():
    assert token_grid(17, 32) == (1, 4, 4)
    assert token_grid(16, 32) == (0, 4, 4)
    assert token_grid(198, 224) == (2, 14, 14)  # DeiT: class and distillation tokens
    assert token_grid(7, 31) is None  # no square grid tiling a 31 px image


def test_whole_image_patches_mark_the_position():
    images = np.zeros((2, 32, 32, 1), dtype=np.uint8)
    tokens = {"receptive_field": (32, 0, 0), "kind": "tokens", "shape": (8, 17, 1), "token_grid": (1, 4, 4)}
    records = np.array([[1, 6, 0, 1.0], [0, 0, 0, 0.5]])  # token 6 = grid cell (1, 1); token 0 = class token
    patches = unit_patches(images, records, tokens)
    assert patches.shape == (2, 32, 32, 3)
    assert position_box(6, 0, tokens, 32, 32) == (8, 8, 16, 16)
    red = (patches[0] == (255, 0, 0)).all(axis=-1)
    assert red[8, 8:16].all() and red[15, 8:16].all() and red[8:16, 8].all() and not red[12, 12]
    assert red.sum() == 28 and not (patches[1] != 0).any()  # the class token marks nothing
    spatial = {"receptive_field": (32, 0, 0), "kind": "spatial", "shape": (8, 2, 2)}
    assert position_box(1, 0, spatial, 32, 32) == (16, 0, 32, 16)
    vector = {"receptive_field": (32, 0, 0), "kind": "vector", "shape": (8, 1, 1)}
    assert unit_patches(images, records, vector).shape == (2, 32, 32, 1)  # whole image, nothing to mark
    local = {"receptive_field": (3, 1, -1), "kind": "spatial", "shape": (8, 32, 32)}
    assert unit_patches(images, records, local).shape == (2, 3, 3, 1)

"""Model stitching: a network stitched to itself loses nothing, and the maps are what they claim."""

import numpy as np
import pytest
import torch

from convergent.sparse_mapping import Moments
from convergent.stitching import (affine_output_moments, least_squares, permutation_coef, standardized_affine,
                                  stitch_layers, trained_stitch)
from test_permutation import trained_small_cnn  # noqa: F401 (a fixture)


def test_self_stitching_has_no_penalty(trained_small_cnn):  # noqa: F811
    net, (x_train, y_train), (x_held, y_held) = trained_small_cnn
    layers = list(net.probe_points)
    identity = {layer: None for layer in layers}
    identity.update({"conv2": np.arange(32), "fc1": np.arange(128)})
    fit = lambda: [x_train[:100], x_train[100:200]]
    train = lambda: iter([(x_train[i:i + 50], y_train[i:i + 50]) for i in range(0, 200, 50)])
    held = lambda: [(x_held, y_held)]
    rows = stitch_layers(net, net, layers, identity, fit, train, held, decay=0.0, steps=8, lr=1e-3, log=lambda *_: None)
    by = {(r["layer"], r["stitch"]): r for r in rows}
    assert {s for _, s in by} == {"trained", "permutation", "sparse"}
    for layer in layers:
        # least squares of a layer on itself is the identity: nothing changes
        assert by[layer, "sparse"]["penalty"] == 0, layer
        assert by[layer, "sparse"]["loss"] == pytest.approx(by[layer, "sparse"]["loss_b"], abs=1e-4), layer
        # a few Adam steps from that start stay within an image of B (200 held-out images)
        assert abs(by[layer, "trained"]["penalty"]) <= 0.005 + 1e-12, layer
    for layer in ("conv2", "fc1"):  # the identity matching as a permutation stitch is exact
        assert by[layer, "permutation"]["penalty"] == 0
        assert by[layer, "permutation"]["loss"] == pytest.approx(by[layer, "permutation"]["loss_b"], abs=1e-5)


def test_maps_between_standardised_activations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)) * [1, 2, 3] + [0, 1, -1]
    y = x @ rng.normal(size=(3, 4)) + 0.1 * rng.normal(size=(500, 4)) + 5
    moments = Moments.of(x, y)
    weight, bias = least_squares(moments, ridge=0)
    reference = np.linalg.lstsq(np.hstack([x, np.ones((500, 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(weight, reference[:3].T, atol=1e-9)
    np.testing.assert_allclose(bias, reference[3], atol=1e-9)
    mean, var = affine_output_moments(weight, bias, moments)
    prediction = x @ weight.T + bias
    np.testing.assert_allclose(mean, prediction.mean(0), atol=1e-9)
    np.testing.assert_allclose(var, prediction.var(0), rtol=1e-9)
    # a permutation between standardised units: unit j of y takes x's matched unit, rescaled
    coef = permutation_coef(np.array([2, -1, 0]), 4)
    assert coef.tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    w, b = standardized_affine(coef, x.mean(0), x.std(0), y.mean(0), y.std(0))
    mapped = x @ w.T + b
    np.testing.assert_allclose(mapped[:, 2], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std() * y[:, 2].std() + y[:, 2].mean())
    np.testing.assert_allclose(mapped[:, 1], y[:, 1].mean())  # unmatched: its mean


def test_trained_stitch_starts_as_its_affine_map():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(8, 3, 5, 5)) + 1.0, dtype=torch.float32)
    rows = x.movedim(1, -1).reshape(-1, 3).double().numpy()
    weight, bias = rng.normal(size=(4, 3)), rng.normal(size=4)
    moments = Moments.of(rows, rows @ weight.T + bias)
    stitch = trained_stitch(3, 4, spatial=True, init=(weight, bias),
                            init_moments=affine_output_moments(weight, bias, moments)).eval()
    with torch.no_grad():
        out = stitch(x).movedim(1, -1).reshape(-1, 4).double().numpy()
    np.testing.assert_allclose(out, rows @ weight.T + bias, atol=1e-3)

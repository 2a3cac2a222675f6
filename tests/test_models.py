"""Every architecture builds, runs, and exposes its probe layers with the expected shapes."""

import pytest
import torch

from convergent.models import build_model, probe_layer_names, receptive_field, select_layers


def _probe_shapes(model, x):
    shapes, modules = {}, dict(model.named_modules())
    hooks = [modules[path].register_forward_hook(lambda _m, _i, out, n=name: shapes.__setitem__(n, tuple(out.shape)))
             for name, path in model.probe_points.items()]
    with torch.no_grad():
        logits = model.eval()(x)
    for hook in hooks:
        hook.remove()
    return logits, shapes


@pytest.mark.parametrize(
    "architecture, channels, size, classes, expected",
    [
        ("small_cnn", 1, 28, 10, {"conv1": (2, 16, 28, 28), "conv4": (2, 64, 14, 14), "fc1": (2, 128)}),
        ("resnet18", 3, 32, 10, {"conv1": (2, 64, 32, 32), "layer2.0": (2, 128, 16, 16),
                                 "layer4.1": (2, 512, 4, 4), "avgpool": (2, 512, 1, 1)}),
        ("resnet34", 3, 32, 100, {"layer3.5": (2, 256, 8, 8), "layer4.2": (2, 512, 4, 4)}),
        ("vgg16", 3, 32, 10, {"conv1_1": (2, 64, 32, 32), "conv5_3": (2, 512, 2, 2), "fc7": (2, 512)}),
        ("caffenet", 3, 227, 1000, {"conv1": (2, 96, 55, 55), "conv2": (2, 256, 27, 27),
                                    "conv5": (2, 256, 13, 13), "fc7": (2, 4096)}),
    ],
)
def test_forward_and_probe_shapes(architecture, channels, size, classes, expected):
    torch.manual_seed(0)
    model = build_model(architecture, channels, classes, size)
    logits, shapes = _probe_shapes(model, torch.randn(2, channels, size, size))
    assert logits.shape == (2, classes)
    assert list(shapes) == probe_layer_names(architecture)  # every probe fires once, in order
    for layer, shape in expected.items():
        assert shapes[layer] == shape
    for layer, shape in shapes.items():  # post-ReLU: never negative
        assert len(shape) in (2, 4), layer


def test_probed_outputs_are_post_relu():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 10, 32)
    modules = dict(model.named_modules())
    outputs = []
    hooks = [modules[p].register_forward_hook(lambda _m, _i, out: outputs.append(out)) for p in model.probe_points.values()]
    with torch.no_grad():
        model.eval()(torch.randn(2, 3, 32, 32))
    assert all(float(out.min()) >= 0 for out in outputs)
    for hook in hooks:
        hook.remove()


def test_imagenet_vgg16_uses_torchvision_definition():
    model = build_model("vgg16", 3, 1000, 224)
    assert model.classifier[0].in_features == 512 * 7 * 7
    assert sum(p.numel() for p in model.parameters()) == 138_357_544  # torchvision's VGG-16


@pytest.mark.parametrize(
    "architecture, channels, size, layer, expected",
    [  # published receptive fields (size, stride) of these layers
        ("small_cnn", 1, 28, "conv1", (3, 1, -1)),
        ("small_cnn", 1, 28, "conv4", (14, 2, -6)),
        ("caffenet", 3, 227, "conv1", (11, 4, 0)),
        ("caffenet", 3, 227, "conv2", (51, 8, -16)),
        ("caffenet", 3, 227, "conv5", (163, 16, -64)),
        ("vgg16", 3, 32, "conv5_3", (196, 16, -90)),
        ("small_cnn", 1, 28, "fc1", (28, 0, 0)),
    ],
)
def test_receptive_fields(architecture, channels, size, layer, expected):
    model = build_model(architecture, channels, 10, size)
    assert receptive_field(model, layer, channels, size) == expected


def test_receptive_field_agrees_with_perturbation():
    """Independent check: perturbing an input pixel changes the output position only inside its field."""
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10, 28).double().eval()
    size, stride, offset = receptive_field(model, "conv3", 1, 28)
    captured = {}
    dict(model.named_modules())["features.relu3"].register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("out", out))
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64) + 0.5
    with torch.no_grad():
        model(x)
        base = captured["out"].clone()
        y0 = x0 = 7
        lo = y0 * stride + offset
        for pixel in [(lo, lo), (lo + size - 1, lo + size - 1), (lo - 1, lo + 2), (lo + size, lo + 2)]:
            bumped = x.clone()
            bumped[0, 0, pixel[0], pixel[1]] += 10.0
            model(bumped)
            changed = bool((captured["out"][0, :, y0, x0] != base[0, :, y0, x0]).any())
            inside = lo <= pixel[0] < lo + size and lo <= pixel[1] < lo + size
            if not inside:
                assert not changed, pixel


def test_select_layers():
    assert select_layers("small_cnn", None) == probe_layer_names("small_cnn")
    assert select_layers("small_cnn", ["fc1", "conv2"]) == ["conv2", "fc1"]  # network order
    with pytest.raises(ValueError, match="model.layers"):
        select_layers("small_cnn", ["conv7"])

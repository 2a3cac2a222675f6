"""Any model, any layer by name: torchvision models with random weights, checked against independent
references (plain forward hooks, pre-hooks on the op that consumes a value, explicit permutes)."""

import textwrap

import pytest
import torch

from convergent.architectures import LayerSpec, layer_specs
from convergent.layer_listing import list_layers
from convergent.models import load_model
from convergent.probing import (ProbeError, ProbeRunner, default_layer_names, detect_layout,
                                probe_batch, resolve_probes)

TINY_VIT = {"torchvision": "VisionTransformer",
            "kwargs": {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32,
                       "mlp_dim": 64}}
GEOMETRY = (3, 10, 32)


def _load(cfg, geometry=GEOMETRY, **kwargs):
    return load_model(cfg, geometry, seed=0, **kwargs)


@pytest.fixture(scope="module")
def resnet50():
    return _load({"torchvision": "resnet50"}).module


@pytest.fixture(scope="module")
def convnext():
    return _load({"torchvision": "convnext_tiny"}).module


def _hooked(module, name, x):
    """The output of module ``name`` for ``x``, by a plain forward hook (the reference)."""
    out = {}
    handle = module.get_submodule(name).register_forward_hook(lambda _m, _i, o: out.__setitem__("v", o.clone()))
    with torch.no_grad():
        module(x)
    handle.remove()
    return out["v"]


def _read(module, specs, x, mode="auto"):
    probes = resolve_probes(module, specs, x, mode=mode)
    with ProbeRunner(module, probes) as runner, torch.no_grad():
        return probes, runner(x)


@pytest.mark.parametrize("cfg, n_blocks, kind, shape", [
    ({"torchvision": "resnet50"}, 16, "spatial", (256, 8, 8)),
    ({"torchvision": "convnext_tiny"}, 18, "spatial", (96, 8, 8)),
    ({"torchvision": "efficientnet_b0"}, 16, "spatial", (16, 16, 16)),
    (TINY_VIT, 2, "tokens", (32, 17, 1)),
], ids=["resnet50", "convnext_tiny", "efficientnet_b0", "vit"])
def test_default_layers_are_the_blocks(cfg, n_blocks, kind, shape):
    loaded = _load(cfg, probes=True)
    assert len(loaded.probes) == n_blocks
    first = next(iter(loaded.probes.values()))
    assert first.via == "fx" and first.kind == kind and first.shape == shape
    names = list(loaded.probes)
    assert names == default_layer_names(loaded.module)  # network order
    expected_first = {"resnet50": "layer1.0", "convnext_tiny": "features.1.0", "efficientnet_b0": "features.1.0",
                      "VisionTransformer": "encoder.layers.encoder_layer_0"}
    assert names[0] == expected_first[cfg["torchvision"]]


def test_fx_and_hooks_give_identical_activations(resnet50, convnext):
    """Where both apply (module names), the traced graph and forward hooks read the same values;
    bn3 is followed by an in-place `out += identity`, which a hook must not let through."""
    x = probe_batch(3, 32)
    for module, names in ((resnet50, ["layer1.0.bn3", "layer2.1", "layer4", "avgpool"]),
                          (convnext, ["features.1.0", "features.3.1.block.3", "features.5"])):
        specs = [LayerSpec(n, n) for n in names]
        fx_probes, fx_out = _read(module, specs, x, mode="fx")
        hook_probes, hook_out = _read(module, specs, x, mode="hooks")
        assert {p.via for p in fx_probes.values()} == {"fx"} and {p.via for p in hook_probes.values()} == {"hook"}
        for name in names:
            assert torch.equal(fx_out[name], hook_out[name]), name
    _, out = _read(resnet50, [LayerSpec("layer2.1", "layer2.1")], x)
    assert torch.equal(out["layer2.1"], _hooked(resnet50, "layer2.1", x))  # and both equal a plain hook


def test_fx_node_names_read_functional_ops(resnet50):
    """`layer1.0.add` is the residual sum, the input of the block's third ReLU call; `relu_2` its output."""
    x = probe_batch(3, 32)
    calls = []
    relu = resnet50.get_submodule("layer1.0.relu")
    handle = relu.register_forward_pre_hook(lambda _m, args: calls.append(args[0].clone()))
    with torch.no_grad():
        resnet50(x)
    handle.remove()
    assert len(calls) == 3  # one module, three calls
    _, out = _read(resnet50, [LayerSpec(n, n) for n in ("layer1.0.add", "layer1.0.relu_2")], x)
    assert torch.equal(out["layer1.0.add"], calls[2])
    assert torch.equal(out["layer1.0.relu_2"], torch.relu(calls[2]))


def test_channels_last_maps_are_detected_and_declared(convnext):
    x = probe_batch(3, 32)
    raw = _hooked(convnext, "features.1.0.block.3", x)  # a Linear inside a permuted block: [N, H, W, C]
    assert raw.shape == (3, 8, 8, 384)
    probes, out = _read(convnext, [LayerSpec("features.1.0.block.3", "features.1.0.block.3"),
                                   LayerSpec("gelu", "features.1.0.block.4", layout="NHWC")], x)
    assert probes["features.1.0.block.3"].layout == "NHWC" and probes["features.1.0.block.3"].shape == (384, 8, 8)
    assert torch.equal(out["features.1.0.block.3"], raw.permute(0, 3, 1, 2))
    assert probes["gelu"].layout == "NHWC" and probes["gelu"].signed  # GELU dips below zero
    assert detect_layout((3, 8, 8, 384)) == "NHWC" and detect_layout((3, 384, 8, 8)) == "NCHW"
    assert detect_layout((3, 16, 16, 16)) == "NCHW"  # ambiguous: channels first unless declared


def test_tokens_and_signs_of_a_vit():
    loaded = _load({**TINY_VIT, "layers": ["conv_proj", "encoder.layers.encoder_layer_1", "heads"]}, probes=True)
    conv, tokens, heads = loaded.probes.values()
    assert (conv.kind, conv.shape, conv.signed) == ("spatial", (32, 4, 4), True)
    assert (tokens.kind, tokens.shape, tokens.layout) == ("tokens", (32, 17, 1), "NTC")
    assert heads.kind == "vector" and heads.shape == (10, 1, 1)
    x = probe_batch(3, 32)
    with ProbeRunner(loaded.module, loaded.probes) as runner, torch.no_grad():
        out = runner(x)
    reference = _hooked(loaded.module, "encoder.layers.encoder_layer_1", x)  # [N, T, C]
    assert torch.equal(out["encoder.layers.encoder_layer_1"], reference.permute(0, 2, 1).unsqueeze(-1))


FACTORY = textwrap.dedent('''
    from collections import OrderedDict, namedtuple

    import torch
    from torch import nn

    Pair = namedtuple("Pair", ["pre", "post"])


    class Split(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            pre = self.conv(x)
            return pre, torch.relu(pre)


    class Heads(nn.Module):
        def forward(self, x):
            return OrderedDict(feat=x, pooled=x.mean(dim=(2, 3)))


    class Named(nn.Module):
        def forward(self, x):
            return Pair(x, x * 2)


    class Net(nn.Module):
        def __init__(self, num_classes=10, width=8):
            super().__init__()
            self.split = Split()
            self.named = Named()
            self.heads = Heads()
            self.shared = nn.ReLU()
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            _, post = self.split(x)
            post = self.named(post).post
            post = self.shared(post) + self.shared(-post)
            return self.fc(self.heads(post)["pooled"])


    class Untraceable(Net):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
                x = x * 1.0
            return super().forward(x)


    def build(num_classes=10, width=8):
        return Net(num_classes, width)


    def untraceable(num_classes=10):
        return Untraceable(num_classes)


    def not_a_module():
        return "a string"
''')


@pytest.fixture()
def factory_file(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(FACTORY)
    return path


def test_factory_tuple_dict_and_namedtuple_outputs(factory_file):
    cfg = {"factory": f"{factory_file}:build",
           "layers": ["split.conv", {"layer": "split", "output": 1, "name": "split_post"},
                      {"layer": "heads", "output": "feat"}, {"layer": "heads", "output": ["pooled"]},
                      {"layer": "named", "output": "post"}]}
    loaded = _load(cfg, probes=True)
    assert list(loaded.probes) == ["split.conv", "split_post", "named.post", "heads.feat", "heads.pooled"]
    x = probe_batch(3, 32)
    with ProbeRunner(loaded.module, loaded.probes) as runner, torch.no_grad():
        out = runner(x)
    pre = _hooked(loaded.module, "split.conv", x)
    assert torch.equal(out["split.conv"], pre)
    assert torch.equal(out["split_post"], torch.relu(pre))
    assert torch.equal(out["named.post"], 2 * torch.relu(pre))
    assert loaded.probes["heads.pooled"].kind == "vector"
    assert loaded.module.fc.out_features == 10  # num_classes from the dataset, since the factory takes it


def test_a_tuple_without_selector_is_refused(factory_file):
    with pytest.raises(ProbeError, match=r"outputs tuple\(Tensor\[3, 8, 32, 32\], Tensor.*choose one with `output:`"):
        _load({"factory": f"{factory_file}:build", "layers": ["split"]}, probes=True)
    with pytest.raises(ProbeError, match="has no element 5"):
        _load({"factory": f"{factory_file}:build", "layers": [{"layer": "split", "output": 5}]}, probes=True)


def test_untraceable_models_are_read_with_hooks(factory_file):
    cfg = {"factory": f"{factory_file}:untraceable", "layers": ["split.conv", "named", "fc"]}
    with pytest.raises(ProbeError, match="choose one with"):
        _load(cfg, probes=True)  # `named` returns a namedtuple
    cfg["layers"] = ["split.conv", {"layer": "named", "output": 1}, "fc"]
    loaded = _load(cfg, probes=True)
    assert {p.via for p in loaded.probes.values()} == {"hook"}
    x = probe_batch(3, 32)
    with ProbeRunner(loaded.module, loaded.probes) as runner, torch.no_grad():
        assert torch.equal(runner(x)["split.conv"], _hooked(loaded.module, "split.conv", x))


def test_untraceable_and_unhookable_layers_are_explained(factory_file):
    cfg = {"factory": f"{factory_file}:untraceable"}
    with pytest.raises(ProbeError, match=r"'add' is not a module of Untraceable.*traces with torch.fx, and this one does not \(TraceError.*convergent layers"):
        _load({**cfg, "layers": ["add"]}, probes=True)
    with pytest.raises(ProbeError, match=r"module 'shared' runs 2 times in one forward pass.*does not trace"):
        _load({**cfg, "layers": ["shared"]}, probes=True)


def test_unknown_layer_names_nearby_ones_and_the_listing(resnet50):
    with pytest.raises(ProbeError) as error:
        resolve_probes(resnet50, [LayerSpec("layer1.0.conv9", "layer1.0.conv9")], probe_batch(3, 32))
    message = str(error.value)
    assert "'layer1.0.conv9' is not a layer" in message and "layer1.0.conv1" in message
    assert "convergent layers" in message and "model.layers" in message


def test_unsupported_output_shape_is_named(tmp_path):
    (tmp_path / "odd.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class Score(nn.Module):
            def forward(self, x):
                return x.sum(dim=(1, 2, 3))

        class Volume(nn.Module):
            def forward(self, x):
                return x.unsqueeze(1)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.score, self.volume = Score(), Volume()

            def forward(self, x):
                return self.volume(x).mean() + self.score(x)

        def build():
            return Net()
    '''))
    for layer, shape in (("score", r"\[3\]"), ("volume", r"\[3, 1, 3, 32, 32\]")):
        with pytest.raises(ProbeError, match=rf"layer '{layer}' outputs shape {shape}; supported"):
            _load({"factory": f"{tmp_path / 'odd.py'}:build", "layers": [layer]}, probes=True)


def test_layer_specs_from_config():
    specs = layer_specs({"layers": ["a.b", {"layer": "lstm", "output": [0, "h"]}, {"layer": "x", "name": "y"}]})
    assert specs == [LayerSpec("a.b", "a.b"), LayerSpec("lstm.0.h", "lstm", (0, "h")), LayerSpec("y", "x")]
    with pytest.raises(ValueError, match="listed more than once"):
        layer_specs({"layers": ["a", "a"]})
    with pytest.raises(ValueError, match="cannot name files"):
        layer_specs({"layers": [{"layer": "x", "name": "a/b"}]})


def test_listing_every_layer(resnet50, factory_file):
    how, rows = list_layers(resnet50, probe_batch(3, 32))
    assert how.startswith("fx")
    by_name = {row["name"]: row for row in rows}
    assert by_name["layer1.0.add"]["kind"] == "spatial" and by_name["layer1.0.add"]["signed"]
    assert by_name["layer1.0.relu_2"]["signed"] is False and by_name["layer1.0.relu_2"]["default"] == "layer1.0"
    assert by_name["fc"]["kind"] == "vector" and by_name["fc"]["units"] == 10
    names = [row["name"] for row in rows]
    assert names.index("layer1.0.conv1") < names.index("layer1.0.add") < names.index("layer2.0.conv1")
    loaded = _load({"factory": f"{factory_file}:untraceable"})
    how, rows = list_layers(loaded.module, probe_batch(3, 32))
    assert how.startswith("hooks")
    notes = {row["name"]: row["note"] for row in rows}
    assert "runs 2 times" in notes["shared"] and "output: 0" in notes["split"]


def test_the_models_own_output_with_a_selector(factory_file):
    loaded = _load({"factory": f"{factory_file}:build"})
    probes = resolve_probes(loaded.module, [LayerSpec("logits", "", (), None), LayerSpec("fc", "fc")],
                            probe_batch(3, 32))
    assert {p.via for p in probes.values()} == {"hook"} and probes["logits"].kind == "vector"
    x = probe_batch(3, 32)
    with ProbeRunner(loaded.module, probes) as runner, torch.no_grad():
        out = runner(x)
        assert torch.equal(out["logits"], loaded.module(x)) and torch.equal(out["fc"], out["logits"])

"""The functional stages on models from outside the zoo (torchvision, timm), random weights, 32 px.

* the permutation groups derived from a torchvision ResNet-18's and VGG's fx graph leave their
  function unchanged, and contain what the architecture says they must (the residual stream of a
  stage, batch-norm statistics, the 7×7 blocks of VGG's first linear layer);
* both alignments recover a random permutation of a network's own copy, after which the line
  between them is flat (barrier 0) while the unaligned one is not;
* graphs that cannot be followed are refused naming the node, its op and why;
* the stitching cut at a module or FX node name gives the network back, and the stitched model
  equals its manual composition; a network stitched to itself loses nothing;
* the plan-time check says which layers cannot be stitched and why, and caches its answer;
  a dry run plans the functional jobs for a torchvision model (workflow-marked).
"""

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from convergent.alignment import activation_matching, weight_matching
from convergent.architectures import LayerSpec
from convergent.connectivity import alpha_grid, barrier, interpolation_curve, reset_batch_norm
from convergent.functional_plan import check_model, plan_functional
from convergent.network_graph import cut, trace
from convergent.permutation import derive_spec, inverse, permute_state, permuted
from convergent.stitching import stitch_layers, stitched, trained_stitch
from test_permutation import _randomise_batch_norm


def _net(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    net = torchvision.models.get_model(name, num_classes=10, **kwargs).eval()
    _randomise_batch_norm(net, seed)
    return net


def _small_head(net: nn.Module) -> nn.Module:
    """VGG with 64-wide hidden linear layers: the same graph (adaptive 7×7 pool, flatten, three
    linear layers), without 4096×25088 matrices whose weight matching takes minutes on a CPU."""
    net.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64),
                                   nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    return net.eval()


def _group_of(spec, key: str, axis: int):
    return next(g for g in spec.groups.values() if any(ax.key == key and ax.axis == axis for ax in g.axes))


def _has(group, key: str, axis: int, repeat: int = 1) -> bool:
    return any((ax.key, ax.axis, ax.repeat) == (key, axis, repeat) for ax in group.axes)


@pytest.mark.parametrize("name, groups", [("resnet18", 4 + 8), ("vgg11_bn", 8 + 2)])
def test_permuted_torchvision_network_computes_the_same_function(name, groups):
    net = _net(name)
    x = torch.randn(3, 3, 32, 32)
    spec = derive_spec(net, x[:2])
    assert len(spec.groups) == groups and not spec.fixed
    with torch.no_grad():
        reference = net(x)
        other = permuted(net, spec, spec.random(seed=1)).eval()(x)
        assert (other - reference).abs().max() <= 1e-5 * reference.abs().max()
        # the check can fail: permute the largest group's output axes but not its readers
        largest = max(spec.groups.values(), key=lambda g: g.size)
        partial = type(spec)({largest.name: type(largest)(largest.name, largest.size,
                                                          [ax for ax in largest.axes if ax.axis == 0])}, {})
        broken = permuted(net, partial, {largest.name: np.roll(np.arange(largest.size), 1)}).eval()
        assert (broken(x) - reference).abs().max() > 1e-3 * reference.abs().max()


def test_resnet_groups_follow_the_residual_stream_and_batch_norm():
    spec = derive_spec(_net("resnet18"), torch.zeros(2, 3, 32, 32))
    stream = _group_of(spec, "conv1.weight", 0)  # the stem writes layer1's residual stream
    for key, axis in [("bn1.running_mean", 0), ("bn1.running_var", 0), ("layer1.0.conv2.weight", 0),
                      ("layer1.1.bn2.running_var", 0), ("layer1.0.conv1.weight", 1),
                      ("layer2.0.conv1.weight", 1), ("layer2.0.downsample.0.weight", 1)]:
        assert _has(stream, key, axis), key
    inner = _group_of(spec, "layer1.0.conv1.weight", 0)  # inside a block: its own permutation
    assert inner is not stream and _has(inner, "layer1.0.bn1.weight", 0) and _has(inner, "layer1.0.conv2.weight", 1)
    last = _group_of(spec, "layer4.0.downsample.0.weight", 0)
    assert _has(last, "fc.weight", 1) and _has(last, "layer4.1.bn2.bias", 0)


def test_vgg_flatten_gives_each_channel_its_block_of_the_linear_layer():
    spec = derive_spec(_small_head(_net("vgg11")), torch.zeros(2, 3, 32, 32))
    last_conv = _group_of(spec, "features.18.weight", 0)
    assert _has(last_conv, "classifier.0.weight", 1, repeat=49)  # the 1×1 map pooled to 7×7, flattened


# --------------------------------------------------------------------------- recovery and barrier


@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
def test_both_alignments_recover_a_random_permutation_and_flatten_the_barrier(name):
    # batch norm as initialised (no random offsets), so that on noise images every unit fires on
    # about half of them: a unit firing on one image of 64 ties with any other such unit
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, num_classes=10).eval()
    if name.startswith("vgg"):
        net = _small_head(net)
    x_fit, x_held = torch.randn(64, 3, 32, 32), torch.randn(48, 3, 32, 32)
    reset = lambda: [x_fit[:32], x_fit[32:]]
    reset_batch_norm(net, reset())  # as every point of the line will be
    with torch.no_grad():
        y_held = net(x_held).argmax(1)  # net A is right on every image: a drop along the line shows
    spec = derive_spec(net, x_fit[:2])
    scramble = spec.random(seed=3)
    copy = permuted(net, spec, scramble).eval()
    truth = inverse(scramble)  # B'[i] = B[perm[i]] = A[i]
    state_a, state_b = net.state_dict(), copy.state_dict()
    wm, _ = weight_matching(state_a, state_b, spec)
    am, _ = activation_matching(net, copy, spec, [x_fit[:32], x_fit[32:]])
    for group in spec.groups:
        np.testing.assert_array_equal(wm[group], truth[group], err_msg=f"weight matching, {group}")
        np.testing.assert_array_equal(am[group], truth[group], err_msg=f"activation matching, {group}")

    alphas = alpha_grid(3)
    held = lambda: [(x_held, y_held)]
    work = torchvision.models.get_model(name, num_classes=10)
    if name.startswith("vgg"):
        work = _small_head(work)
    for alignment, perms in (("weight", wm), ("activation", am)):
        curve = interpolation_curve(work, state_a, permute_state(state_b, spec, perms), alphas, held, reset)
        assert abs(barrier(alphas, [r["loss"] for r in curve])) <= 1e-6, alignment
        assert abs(barrier(alphas, [r["accuracy"] for r in curve], higher_is_better=True)) <= 1e-6, alignment
    curve = interpolation_curve(work, state_a, state_b, alphas, held, reset)
    assert curve[0]["accuracy"] == 1.0  # the line starts at A, reset as above
    assert barrier(alphas, [r["accuracy"] for r in curve], higher_is_better=True) > 0.2


# --------------------------------------------------------------------------- refused graphs


def test_unsupported_graphs_name_the_node_and_why():
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=3)
    with pytest.raises(ValueError, match=r"node 'reshape' \(reshape to shape \(2, 32, 16\)\): a reshape other "
                                         r"than flatten\(x, 1\) \(a map into patch tokens"):
        derive_spec(vit, torch.zeros(2, 3, 32, 32))
    answer = check_model(vit, torch.randn(2, 3, 32, 32), [LayerSpec("conv_proj", "conv_proj")])
    assert answer["reason"].startswith("cannot derive permutation groups: node 'reshape'") and not answer["stitch"]

    from torchvision.models.resnet import Bottleneck, ResNet

    resnext = ResNet(Bottleneck, [1, 1, 1, 1], groups=2, width_per_group=16, num_classes=3)
    with pytest.raises(ValueError, match=r"node 'layer1\.0\.conv2' \(grouped convolution, groups=2\): a "
                                         "permutation would have to keep each group's channels together"):
        derive_spec(resnext, torch.zeros(2, 3, 32, 32))

    class ChannelsLast(nn.Module):  # a ConvNeXt-style block: layer norm over channels moved last
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.head = nn.Conv2d(3, 8, 3), nn.LayerNorm(8), nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.norm(self.conv(x).permute(0, 2, 3, 1)).mean((1, 2)))

    with pytest.raises(ValueError, match=r"node 'permute' \(method \.permute\(\)\): moves the channel axis"):
        derive_spec(ChannelsLast(), torch.zeros(2, 3, 8, 8))


def test_a_timm_vit_is_refused_at_its_patch_tokens():
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=3)
    with pytest.raises(ValueError, match=r"node 'patch_embed\.flatten' \(flatten other than flatten\(x, 1\)\)"):
        derive_spec(vit, torch.zeros(2, 3, 32, 32))


# --------------------------------------------------------------------------- stitching


def test_cut_at_modules_and_fx_nodes_gives_the_network_back():
    net = _net("resnet18")
    graph = trace(net)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = net(x)
        for layer in ("layer1.0", "layer2.1", "layer3.0.add", "avgpool", "flatten"):
            bottom, top = cut(net, layer, graph=graph)
            torch.testing.assert_close(top(bottom(x)), reference, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"cannot cut the network at 'layer2\.1\.conv1': node 'layer2\.1\.add' after "
                                         r"the cut uses 'layer2\.0\.relu_1' from before it"):
        cut(net, "layer2.1.conv1", graph=graph)


def _resnet_bottom(m, x, to_layer3_add: bool):
    x = m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))
    if not to_layer3_add:
        return x
    block = m.layer3[0]
    out = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    return out + block.downsample(x)


def _resnet_top(m, h, from_layer3_add: bool):
    h = m.layer3[1](m.relu(h)) if from_layer3_add else m.layer3(h)
    return m.fc(torch.flatten(m.avgpool(m.layer4(h)), 1))


@pytest.mark.parametrize("layer, target", [("layer2.1", None), ("stage3_sum", "layer3.0.add")])
def test_stitched_resnet_equals_its_manual_composition(layer, target):
    net_a, net_b = _net("resnet18", seed=0), _net("resnet18", seed=1)
    bottom_a, _ = cut(net_a, layer, target)
    _, top_b = cut(net_b, layer, target)
    channels = 128 if target is None else 256
    torch.manual_seed(2)
    stitch = trained_stitch(channels, channels, spatial=True).eval()
    _randomise_batch_norm(stitch, 2)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        by_cut = stitched(bottom_a, stitch, top_b).eval()(x)
        manual = _resnet_top(net_b, stitch(_resnet_bottom(net_a, x, target is not None)), target is not None)
        torch.testing.assert_close(by_cut, manual, rtol=1e-5, atol=1e-6)
        assert (by_cut - net_b(x)).abs().max() > 1e-2  # A's bottom through a random map is not B


def test_stitched_vgg_at_a_vector_layer_equals_its_manual_composition():
    net_a, net_b = _net("vgg11", seed=0), _net("vgg11", seed=1)
    bottom_a, _ = cut(net_a, "classifier.1")
    _, top_b = cut(net_b, "classifier.1")
    torch.manual_seed(2)
    stitch = trained_stitch(4096, 4096, spatial=False).eval()
    assert isinstance(stitch, nn.Linear)  # a vector layer gets a linear stitch
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        by_cut = stitched(bottom_a, stitch, top_b).eval()(x)
        h = net_a.classifier[:2](torch.flatten(net_a.avgpool(net_a.features(x)), 1))
        manual = net_b.classifier[2:](stitch(h))
        torch.testing.assert_close(by_cut, manual, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, layer, target, units, kind", [("resnet18", "layer2.1", None, 128, "spatial"),
                                                              ("vgg11", "hidden", "classifier.1", 64, "vector")])
def test_a_torchvision_network_stitched_to_itself_has_no_penalty(name, layer, target, units, kind):
    net = _net(name) if name.startswith("resnet") else _small_head(_net(name))
    # more inputs than units, or the least-squares maps (sparse at decay 0, the trained layer's
    # start) are not unique
    x_fit, x_held = torch.randn(160, 3, 32, 32), torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        y_fit, y_held = net(x_fit).argmax(1), net(x_held).argmax(1)
    rows = stitch_layers(net, net, [layer], {layer: np.arange(units)}, lambda: x_fit.split(80),
                         lambda: iter([(x_fit[:48], y_fit[:48])]), lambda: [(x_held, y_held)], decay=0.0, steps=0,
                         lr=1e-3, log=lambda *_: None, targets={layer: target or layer})
    by = {r["stitch"]: r for r in rows}
    assert set(by) == {"trained", "permutation", "sparse"} and by["trained"]["kind"] == kind
    assert by["trained"]["accuracy_b"] == 1.0
    for stitch, row in by.items():  # 1x1 conv + BN for the map, linear for the vector: both exact
        assert row["penalty"] == 0, stitch
        assert row["loss"] == pytest.approx(row["loss_b"], abs=1e-4), stitch


# --------------------------------------------------------------------------- plan-time check


def test_plan_says_which_layers_cannot_be_stitched_and_caches_it(tmp_path):
    config = {"model": {"torchvision": "resnet18",
                        "layers": ["layer1.1", {"layer": "layer2.0.conv1", "name": "inner"}, "flatten"]},
              "dataset": {"name": "cifar10"}}
    answer = plan_functional(config, ["layer1.1", "inner", "flatten"], workdir=tmp_path)
    assert answer["reason"] is None and answer["groups"] == 12
    assert answer["stitch"]["layer1.1"] is None and answer["stitch"]["flatten"] is None
    assert answer["stitch"]["inner"].startswith("cannot cut the network at 'layer2.0.conv1'")
    cached = list((tmp_path / ".snakemake" / "convergent").glob("functional-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == answer

    vit = {"model": {"torchvision": "VisionTransformer", "layers": ["conv_proj"],
                     "kwargs": {"image_size": 32, "patch_size": 8, "num_layers": 1, "num_heads": 2,
                                "hidden_dim": 16, "mlp_dim": 16}},
           "dataset": {"name": "cifar10"}}
    refused = plan_functional(vit, ["conv_proj"], workdir=tmp_path)
    assert refused["reason"].startswith("cannot derive permutation groups: node 'reshape'")
    zoo = plan_functional({"model": {"architecture": "small_cnn"}, "dataset": {"name": "mnist5k"}}, ["conv1"],
                          workdir=tmp_path)
    assert zoo["reason"] is None and zoo["stitch"] == {"conv1": None}


@pytest.mark.workflow
def test_dry_run_plans_the_functional_stages_for_a_torchvision_model(tmp_path):
    from conftest import write_config
    from support.dry_run import JOB_BLOCK, Job, run_snakemake
    from test_anymodel_workflow import write_image_folder

    write_image_folder(tmp_path / "images", {"train": 2, "val": 2})
    config = {"experiment": "tvfun", "seeds": [0, 1], "untrained_seeds": [],
              "dataset": {"name": "imagefolder", "root": str(tmp_path / "images"), "image_size": 32,
                          "probe_images": 6},
              "model": {"torchvision": "resnet18", "layers": ["layer2.1", {"layer": "layer3.0.conv1", "name": "inner"}]}}
    result = run_snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config))
    text = result.stdout + result.stderr
    assert "connectivity and stitching skipped" not in text
    assert "stitching skipped at layer inner: cannot cut the network at 'layer3.0.conv1'" in text
    jobs = {}
    for match in JOB_BLOCK.finditer(text):
        job = Job(match.group(1), match.group(2))
        jobs.setdefault(job.rule, []).append(job)
    for rule in ("connectivity", "stitch", "figure_functional_lmc", "figure_functional_stitching"):
        assert len(jobs.get(rule, [])) == 1, rule
    matchings = [p for p in jobs["stitch"][0].inputs if "/matching/" in p]
    assert matchings == ["results/tvfun/matching/layer2.1/0-1.csv"]  # the layer that cannot be cut is left out

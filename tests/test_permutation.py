"""Permutation groups, alignment and linear mode connectivity against exact properties and brute force.

* a permuted network computes the same function (every zoo architecture), and a permutation of
  only part of a group does not (so the check can fail);
* both alignments recover a random permutation of a network's own copy, after which the
  interpolation is flat (barrier 0) while the unaligned one is not;
* weight matching finds the optimum of all permutations on a tiny 2-layer network;
* the batch-norm reset computes the statistics of its batches.
"""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from convergent.connectivity import alpha_grid, barrier, interpolation_curve, reset_batch_norm
from convergent.models import build_model
from convergent.network_graph import probe_node, split, trace
from convergent.alignment import activation_matching, weight_matching
from convergent.permutation import derive_spec, inverse, permute_state, permuted

ZOO = [  # architecture, input channels, image size, groups expected, fixed groups expected
    ("small_cnn", 1, 28, 5, set()),
    ("resnet18", 3, 32, 4 + 8, set()),  # one residual stream per stage + one inner group per block
    ("resnet34", 3, 32, 4 + 16, set()),
    ("vgg16", 3, 32, 13 + 2, set()),  # CIFAR variant: batch norm, 512-512 classifier
    ("vgg16", 3, 65, 13 + 2, set()),  # ImageNet variant: no batch norm, flatten of a 7x7 map into fc6
    ("caffenet", 3, 67, 3 + 2, {"features.conv1", "features.conv2"}),  # LRN fixes conv1, conv2
]


def _randomise_batch_norm(net: nn.Module, seed: int = 0) -> None:
    """Batch-norm parameters and statistics far from 1/0, so a wrong permutation of them shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


# ids from sorted sets: a set prints in hash order, which differs between xdist workers (and
# workers must collect the same ids)
@pytest.mark.parametrize("arch, channels, size, n_groups, fixed", ZOO,
                         ids=lambda v: str(sorted(v)) if isinstance(v, set) else str(v))
def test_permuted_network_computes_the_same_function(arch, channels, size, n_groups, fixed):
    torch.manual_seed(0)
    net = build_model(arch, channels, 10, size).eval()
    _randomise_batch_norm(net)
    spec = derive_spec(net, torch.zeros(2, channels, size, size))
    assert len(spec.groups) == n_groups and set(spec.fixed) == fixed
    x = torch.randn(3, channels, size, size)
    with torch.no_grad():
        reference = net(x)
        other = permuted(net, spec, spec.random(seed=1)).eval()
        assert (other(x) - reference).abs().max() <= 1e-5 * reference.abs().max()
        # the check can fail: permute the largest group's output axes but not its readers
        name = max(spec.groups, key=lambda n: spec.groups[n].size)
        group = spec.groups[name]
        partial = type(spec)({name: type(group)(name, group.size, [ax for ax in group.axes if ax.axis == 0])}, {})
        broken = permuted(net, partial, {name: np.roll(np.arange(group.size), 1)}).eval()
        assert (broken(x) - reference).abs().max() > 1e-3 * reference.abs().max()


@pytest.mark.parametrize("arch, channels, size", [("small_cnn", 1, 28), ("resnet18", 3, 32), ("vgg16", 3, 32)])
def test_cutting_at_every_probe_layer_gives_back_the_network(arch, channels, size):
    torch.manual_seed(0)
    net = build_model(arch, channels, 10, size).eval()
    _randomise_batch_norm(net)
    graph = trace(net)
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        reference = net(x)
        for layer in net.probe_points:
            bottom, top = split(graph, probe_node(graph, net, layer))
            torch.testing.assert_close(top(bottom(x)), reference, rtol=0, atol=0)


def test_unsupported_graphs_are_named():
    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))

    with pytest.raises(ValueError, match="cat"):
        derive_spec(Concat(), torch.zeros(1, 3, 8, 8))
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Flatten(), nn.Linear(8 * 36, 2))
    with pytest.raises(ValueError, match="grouped convolution"):
        derive_spec(grouped, torch.zeros(1, 4, 8, 8))


# --------------------------------------------------------------------------- weight matching vs brute force


def _objective(state_a, state_b, keys):
    return sum(float((state_a[k].double() * state_b[k].double()).sum()) for k in keys)


@pytest.mark.parametrize("seed", range(3))
def test_weight_matching_is_the_best_of_all_permutations_on_a_two_layer_net(seed):
    torch.manual_seed(seed)
    net_a, net_b = (nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).double() for _ in range(2))
    spec = derive_spec(net_a, torch.zeros(1, 3, dtype=torch.float64))
    assert list(spec.groups) == ["0"] and spec.groups["0"].size == 6
    state_a, state_b = net_a.state_dict(), net_b.state_dict()
    keys = list(state_a)
    best = max(_objective(state_a, permute_state(state_b, spec, {"0": np.array(p)}), keys)
               for p in itertools.permutations(range(6)))
    perms, info = weight_matching(state_a, state_b, spec)
    assert info["converged"] and info["objective"] == pytest.approx(best, rel=1e-12)
    assert _objective(state_a, permute_state(state_b, spec, perms), keys) == pytest.approx(best, rel=1e-12)


def test_weight_matching_ends_where_no_single_group_can_improve():
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    net_a, net_b = make(), make()
    spec = derive_spec(net_a, torch.zeros(1, 4, dtype=torch.float64))
    state_a, state_b = net_a.state_dict(), net_b.state_dict()
    perms, info = weight_matching(state_a, state_b, spec)
    value = _objective(state_a, permute_state(state_b, spec, perms), list(state_a))
    for name, group in spec.groups.items():  # coordinate-wise optimal: brute force over each group
        for p in itertools.permutations(range(group.size)):
            trial = {**perms, name: np.array(p)}
            assert _objective(state_a, permute_state(state_b, spec, trial), list(state_a)) <= value + 1e-9


# --------------------------------------------------------------------------- recovery and barrier


@pytest.fixture(scope="module")
def trained_small_cnn():
    """A small CNN after one short epoch on real digits, and batches of its data."""
    from convergent.data import load_dataset

    splits = load_dataset({"name": "mnist5k", "heldout": 300})
    order = torch.Generator().manual_seed(0)
    x_all, y_all = splits.train.tensors
    index = torch.randperm(len(x_all), generator=order)[:800]  # mnist5k is sorted by digit
    x_train, y_train = x_all[index], y_all[index]
    torch.manual_seed(0)
    net = build_model("small_cnn", 1, 10, 28)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(2):
        for i in range(0, 800, 50):
            loss = nn.functional.cross_entropy(net(x_train[i:i + 50]), y_train[i:i + 50])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    x_held, y_held = splits.heldout.tensors
    index = torch.randperm(len(x_held), generator=order)[:200]
    return net.eval(), (x_train, y_train), (x_held[index], y_held[index])


def test_both_alignments_recover_a_random_permutation_and_flatten_the_barrier(trained_small_cnn):
    net, (x_train, _), (x_held, y_held) = trained_small_cnn
    spec = derive_spec(net, x_held[:2])
    scramble = spec.random(seed=3)
    copy = permuted(net, spec, scramble).eval()
    truth = inverse(scramble)  # B'[i] = B[perm[i]] = A[i]
    state_a = net.state_dict()
    wm, _ = weight_matching(state_a, copy.state_dict(), spec)
    am, _ = activation_matching(net, copy, spec, [x_train[:200], x_train[200:400]])
    for name in spec.groups:
        np.testing.assert_array_equal(wm[name], truth[name], err_msg=f"weight matching, {name}")
        np.testing.assert_array_equal(am[name], truth[name], err_msg=f"activation matching, {name}")

    alphas = alpha_grid(5)
    held = lambda: [(x_held, y_held)]
    work = build_model("small_cnn", 1, 10, 28)
    state_b = copy.state_dict()
    for name, perms in (("weight", wm), ("activation", am)):
        curve = interpolation_curve(work, state_a, permute_state(state_b, spec, perms), alphas, held)
        assert abs(barrier(alphas, [r["loss"] for r in curve])) <= 1e-6, name
        assert abs(barrier(alphas, [r["accuracy"] for r in curve], higher_is_better=True)) <= 1e-6, name
    curve = interpolation_curve(work, state_a, state_b, alphas, held)
    assert barrier(alphas, [r["loss"] for r in curve]) > 0.1  # the unaligned line leaves the basin


def test_aligned_copy_of_a_batch_norm_network_has_no_barrier_after_the_reset():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 3 * 3, 10)).eval()
    _randomise_batch_norm(net)
    x = torch.randn(64, 1, 12, 12)
    y = torch.randint(0, 10, (64,))
    spec = derive_spec(net, x[:2])
    scramble = spec.random(seed=1)
    copy = permuted(net, spec, scramble).eval()
    wm, _ = weight_matching(net.state_dict(), copy.state_dict(), spec)
    aligned = permute_state(copy.state_dict(), spec, wm)
    alphas = alpha_grid(5)
    curve = interpolation_curve(net, net.state_dict(), aligned, alphas, lambda: [(x, y)],
                                reset_batches=lambda: [x[:32], x[32:]])
    assert all(r["bn_reset"] for r in curve)
    assert abs(barrier(alphas, [r["loss"] for r in curve])) <= 1e-6


def test_batch_norm_reset_computes_the_statistics_of_its_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                        nn.Linear(3 * 16, 4), nn.BatchNorm1d(4)).double()
    batches = [torch.randn(16, 2, 6, 6, dtype=torch.float64) for _ in range(3)]
    reset_batch_norm(net, batches)
    with torch.no_grad():
        pre = torch.cat([net[0](b) for b in batches])  # what the first batch norm sees
        torch.testing.assert_close(net[1].running_mean, pre.mean((0, 2, 3)))
        per_batch_var = torch.stack([net[0](b).var((0, 2, 3), unbiased=True) for b in batches])
        torch.testing.assert_close(net[1].running_var, per_batch_var.mean(0))  # momentum None: plain average
    assert not net.training  # and dropout was never switched on: a second reset gives the same
    first = net[6].running_mean.clone()
    reset_batch_norm(net, batches)
    torch.testing.assert_close(net[6].running_mean, first, rtol=0, atol=0)

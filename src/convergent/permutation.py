"""Permutation symmetry of a network's units, and aligning one network to another with it.

Permuting the output channels of a layer, together with everything that reads or normalises
them, leaves the function a network computes unchanged. A :class:`PermutationSpec` lists the
*permutation groups* of a network: sets of parameter axes (and batch-norm statistics) that must
be permuted by one and the same permutation. It is derived from the network's torch.fx graph by
following each tensor's channel space from the layer that creates it:

* a convolution or linear layer starts a new group (its output axis, its bias); its input axis
  joins the group of its input;
* batch norm, ReLU-like nonlinearities, pooling, dropout act channel by channel: their
  parameters and running statistics join the group, the output stays in it;
* ``flatten`` after a conv block turns channel ``c`` into the block of inputs
  ``c·H·W ... c·H·W + H·W − 1`` of the next linear layer (``repeat = H·W``);
* adding two tensors (a residual connection) merges their groups: the whole residual stream of
  a ResNet stage shares one permutation (Ainsworth et al. 2023, Fig. 2);
* the input image and the logits are fixed, and so is any channel space a cross-channel
  operation reads: local response normalisation (CaffeNet's ``norm1``/``norm2``) mixes
  neighbouring channels, so CaffeNet's conv1 and conv2 cannot be permuted at all.

Anything else (concatenation, grouped convolution, attention, layer norm, moving the channel
axis, reshapes other than flatten, indexing a tensor) raises a ``ValueError`` naming the node
(as ``convergent layers`` names it), its op and why it cannot be followed: the derivation never
guesses. So torchvision's ResNets, VGGs, AlexNet, MobileNetV2/V3 and EfficientNets derive (any
graph of convolutions, linear layers, batch norm, channel-wise nonlinearities, pooling,
dropout, flatten, residual additions and squeeze-excitation products), and ViTs, Swin, ConvNeXt
(channels-last layer norm), DenseNet, GoogLeNet, SqueezeNet and ShuffleNet (concatenation),
ResNeXt and RegNet (grouped convolutions) are refused at their first such node.

A group that no nonlinearity reads (a MobileNet block's linear bottleneck, whose output is
added to no residual stream) is read by activation matching where its last layer writes it
(``sites``: the batch norm or layer output).

:mod:`convergent.alignment` finds the permutations that align one network to another.

A permutation ``perm`` of a group maps unit ``i`` of the aligned net B' to unit ``perm[i]`` of
B: ``B'[..., i, ...] = B[..., perm[i], ...]`` along every axis of the group.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx, nn

from convergent.network_graph import output_shapes, trace


@dataclass(frozen=True)
class Axis:
    """One axis of one state_dict entry that a group permutes. ``repeat > 1``: the axis has
    ``size·repeat`` entries and unit ``c`` owns the block ``c·repeat ... c·repeat + repeat − 1``
    (a linear layer reading a flattened conv map)."""

    key: str
    axis: int
    repeat: int = 1


@dataclass
class Group:
    """A permutation group: its size, the axes it permutes, and the graph nodes whose outputs
    are its units after a nonlinearity (``sites``: where activation matching reads them)."""

    name: str
    size: int
    axes: list[Axis] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)


@dataclass
class PermutationSpec:
    """The permutation groups of a network, and the channel spaces that are fixed (and why)."""

    groups: dict[str, Group]
    fixed: dict[str, str]

    def identity(self) -> dict[str, np.ndarray]:
        return {name: np.arange(g.size) for name, g in self.groups.items()}

    def random(self, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {name: rng.permutation(g.size) for name, g in self.groups.items()}


_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Mish, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
_NONLINEAR_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                      nn.Hardswish, nn.Mish)
_NONLINEAR_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.gelu,
                        torch.nn.functional.silu, torch.sigmoid, torch.tanh, torch.nn.functional.leaky_relu,
                        torch.nn.functional.elu, torch.nn.functional.relu6, torch.nn.functional.hardswish}
_CHANNELWISE_FUNCTIONS = _NONLINEAR_FUNCTIONS | {
    torch.nn.functional.dropout, torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
    torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.adaptive_max_pool2d,
}
_CHANNELWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_ADD = {operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul, operator.sub}
_NONLINEAR_METHODS = {"relu", "sigmoid", "tanh"}
_FIXED = 0
_ON_VALUES = {operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
              operator.mod, operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
              operator.ge, len, int, float, torch._assert}

# Why an op cannot be followed, by module type or function/method name.
_WHY = {
    "cat": "concatenation: its channels come from several channel spaces, each with its own permutation "
           "(a block permutation that is not derived)",
    "stack": "stacking tensors makes a new axis from several channel spaces",
    "getitem": "indexing or slicing a tensor (a class token, a split into heads) picks channels or tokens by "
               "position, which a permutation does not follow",
    "chunk": "splitting a tensor picks channels by position",
    "split": "splitting a tensor picks channels by position",
    "permute": "moves the channel axis (channels-last maps, token sequences): the derivation follows "
               "channels on axis 1 only",
    "transpose": "moves the channel axis: the derivation follows channels on axis 1 only",
    "reshape": "a reshape other than flatten(x, 1) (a map into patch tokens, channels into heads) does not "
               "keep channels on one axis",
    "view": "a view other than flatten(x, 1) (a map into patch tokens, channels into heads) does not keep "
            "channels on one axis",
    "LayerNorm": "layer norm normalises over the last axis, which here is not followed as the channel axis "
                 "(channels-last blocks, token sequences)",
    "GroupNorm": "group norm normalises blocks of channels together: a permutation would have to keep them",
    "LocalResponseNorm": "local response normalisation mixes neighbouring channels",
    "MultiheadAttention": "attention mixes tokens with weights computed from all channels of each head; "
                          "per-head groups of the query, key and value projections are not derived",
    "scaled_dot_product_attention": "attention mixes tokens with weights computed across channels",
    "softmax": "softmax normalises across an axis",
    "matmul": "a matrix product mixes an axis that the derivation cannot tell apart from channels",
    "bmm": "a matrix product mixes an axis that the derivation cannot tell apart from channels",
    "einsum": "a tensor contraction whose axes the derivation does not follow",
    "ChannelShuffle": "channel shuffle reorders channels by position",
    "channel_shuffle": "channel shuffle reorders channels by position",
}


def _op_key(node: fx.Node, modules: dict) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _is_identity_probe(module: nn.Module) -> bool:
    from convergent.models import _Probe  # the zoo's marker modules return their input

    return isinstance(module, (_Probe, nn.Identity))


def _is_stochastic_depth(op) -> bool:
    """torchvision's stochastic depth drops whole samples (or rows), never single channels."""
    name = getattr(op, "__name__", None) or type(op).__name__
    return name in ("stochastic_depth", "StochasticDepth") and "torchvision" in (
        getattr(op, "__module__", None) or type(op).__module__)


class _Derivation:
    """Union-find over channel spaces while walking the graph once, in order."""

    def __init__(self, graph: fx.GraphModule, shapes: dict):
        self.graph = graph
        self.shapes = shapes
        self.modules = dict(graph.named_modules())
        self.parent = [_FIXED]
        self.size = [0]
        self.names = ["fixed"]
        self.axes: list[list[Axis]] = [[]]
        self.sites: list[list[str]] = [[]]
        self.fixed_reason: dict[int, str] = {}
        self.writers: list[list[str]] = [[]]  # nodes whose output is the group's (conv, bn): fallback sites
        self.label: dict[fx.Node, object] = {}

    # -- union-find
    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def new_group(self, name: str, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.names.append(name)
        self.axes.append([])
        self.sites.append([])
        self.writers.append([])
        return len(self.parent) - 1

    def union(self, a: int, b: int, node: fx.Node, reason: str = "") -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if _FIXED not in (ra, rb) and self.size[ra] != self.size[rb]:
            raise ValueError(f"node {node.name!r}: joins channel spaces of sizes {self.size[ra]} and "
                             f"{self.size[rb]}; cannot derive permutation groups")
        keep, drop = (ra, rb) if ra < rb else (rb, ra)  # the older group names the merged one
        if keep == _FIXED:
            self.fixed_reason.setdefault(drop, reason or f"reaches {node.name!r}, whose channels are fixed")
        self.parent[drop] = keep
        self.axes[keep] += self.axes[drop]
        self.sites[keep] += self.sites[drop]
        self.writers[keep] += self.writers[drop]
        return keep

    def fix(self, label, node: fx.Node, reason: str) -> None:
        if isinstance(label, tuple):
            label = label[1]
        if isinstance(label, int):
            self.union(label, _FIXED, node, reason)

    # -- labels: int (channel group at dim 1), ("flat", group, repeat), or None (not a tensor)
    def input_label(self, node: fx.Node, arg) -> object:
        if not isinstance(arg, fx.Node):
            return None
        if arg not in self.label:
            raise ValueError(f"node {node.name!r}: input {arg.name!r} has no derived channel space")
        return self.label[arg]

    def add_axis(self, label, key: str, axis: int) -> None:
        if isinstance(label, tuple):
            _, group, repeat = label
        else:
            group, repeat = label, 1
        g = self.find(group)
        if g != _FIXED:
            self.axes[g].append(Axis(key, axis, repeat))

    def unsupported(self, node: fx.Node, what: str, why: str | None = None) -> ValueError:
        from convergent.network_graph import node_name

        why = why or _WHY.get(_op_key(node, self.modules), "it is not known to act channel by channel")
        return ValueError(
            f"cannot derive permutation groups: node {node_name(self.graph, node)!r} ({what}): {why}; "
            "supported: conv (groups=1 or depthwise), linear, batch norm, elementwise nonlinearities, "
            "pooling, dropout, flatten, residual addition, channel-wise products")

    def wrote(self, label, node: fx.Node) -> None:
        if isinstance(label, int):
            self.writers[self.find(label)].append(node.name)

    def run(self) -> None:
        for node in self.graph.graph.nodes:
            self.label[node] = self.visit(node)

    def visit(self, node: fx.Node):
        if node.op == "placeholder":
            return _FIXED
        if node.op == "output":
            for arg in node.all_input_nodes:
                self.fix(self.label[arg], node, "the network's output (logits) is fixed")
            return None
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target])
        if node.op == "call_function":
            return self.visit_function(node)
        if node.op == "call_method":
            return self.visit_method(node)
        raise self.unsupported(node, node.op)

    def visit_module(self, node: fx.Node, module: nn.Module):
        x = self.input_label(node, node.args[0])
        name = node.target
        if isinstance(module, nn.Conv2d):
            if isinstance(x, tuple):
                raise self.unsupported(node, "convolution of a flattened tensor")
            if module.groups == 1:
                out = self.new_group(name, module.out_channels)
                self.add_axis(x, f"{name}.weight", 1)
            elif module.groups == module.in_channels == module.out_channels:
                out = x  # depthwise: channel c reads only channel c
            else:
                raise self.unsupported(node, f"grouped convolution, groups={module.groups}",
                                       "a permutation would have to keep each group's channels together and "
                                       "permute the groups alike; such block permutations are not derived")
            self.add_axis(out, f"{name}.weight", 0)
            if module.bias is not None:
                self.add_axis(out, f"{name}.bias", 0)
            self.wrote(out, node)
            return out
        if isinstance(module, nn.Linear):
            out = self.new_group(name, module.out_features)
            self.add_axis(x, f"{name}.weight", 1)
            self.add_axis(out, f"{name}.weight", 0)
            if module.bias is not None:
                self.add_axis(out, f"{name}.bias", 0)
            self.wrote(out, node)
            return out
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if isinstance(x, tuple):
                raise self.unsupported(node, "batch norm of a flattened conv map")
            for key, value in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                if value.ndim == 1:  # weight, bias, running_mean, running_var (not num_batches_tracked)
                    self.add_axis(x, f"{name}.{key}", 0)
            self.wrote(x, node)
            return x
        if isinstance(module, nn.LocalResponseNorm):
            self.fix(x, node, f"{name!r} (local response normalisation) mixes neighbouring channels")
            return x
        if isinstance(module, nn.Flatten):
            return self.flatten(node, x, module.start_dim, module.end_dim)
        if isinstance(module, _CHANNELWISE_MODULES) or _is_identity_probe(module) or _is_stochastic_depth(module):
            if isinstance(module, _NONLINEAR_MODULES) and isinstance(x, int):
                self.sites[self.find(x)].append(node.name)
            return x
        raise self.unsupported(node, f"module {name!r} of type {type(module).__name__}")

    def flatten(self, node: fx.Node, x, start: int = 1, end: int = -1):
        shape = self.shapes.get(node.args[0])
        if shape is None or start != 1 or end not in (-1, len(shape) - 1):
            raise self.unsupported(node, "flatten other than flatten(x, 1)",
                                   "only flatten(x, 1) of a map is followed (channel c becomes a block of the "
                                   "next linear layer's inputs); flattening the spatial axes into tokens moves "
                                   "the channel axis")
        if isinstance(x, tuple) or len(shape) == 2:
            return x
        repeat = int(np.prod(shape[2:]))
        return x if repeat == 1 else ("flat", x, repeat)

    def visit_function(self, node: fx.Node):
        fn = node.target
        if fn is getattr:
            return None
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        labels = [self.label[a] for a in tensors]
        if tensors and all(lab is None for lab in labels) and fn in _ON_VALUES:
            return None  # arithmetic on shapes and sizes, not on tensors
        if fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self.flatten(node, labels[0], start, end)
        if fn in _CHANNELWISE_FUNCTIONS or _is_stochastic_depth(fn):
            if fn in _NONLINEAR_FUNCTIONS and isinstance(labels[0], int):
                self.sites[self.find(labels[0])].append(node.name)
            return labels[0]
        if fn in _ADD:
            return self.join(node, [lab for lab in labels if lab is not None])
        raise self.unsupported(node, f"function {getattr(fn, '__name__', fn)}")

    def visit_method(self, node: fx.Node):
        method = node.target
        x = self.input_label(node, node.args[0])
        if method == "size" or (x is None and method in ("__getitem__",)):
            return None
        if method in _CHANNELWISE_METHODS:
            if method in _NONLINEAR_METHODS and isinstance(x, int):
                self.sites[self.find(x)].append(node.name)
            return x
        if method == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return self.flatten(node, x, start, -1)
        if method in ("view", "reshape"):
            in_shape, out_shape = self.shapes.get(node.args[0]), self.shapes.get(node)
            if in_shape and out_shape and len(out_shape) == 2 and out_shape[0] == in_shape[0]:
                return self.flatten(node, x, 1, -1)
            raise self.unsupported(node, f"{method} to shape {out_shape}")
        if method == "mean":
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
            if dims and 1 not in dims and -3 not in dims:
                return x
            raise self.unsupported(node, "mean over the channel axis")
        if method in ("add", "add_", "mul", "mul_"):
            return self.join(node, [self.label[a] for a in node.all_input_nodes])
        raise self.unsupported(node, f"method .{method}()")

    def fallback_sites(self, g: int) -> list[str]:
        """Where activation matching reads a group that no nonlinearity reads: the last writer."""
        return self.sites[g] or self.writers[g][-1:]

    def join(self, node: fx.Node, labels: list):
        if not labels:
            return None
        if any(isinstance(lab, tuple) for lab in labels):
            if len({lab for lab in labels}) == 1:
                return labels[0]
            raise self.unsupported(node, "arithmetic on flattened tensors of different layouts")
        out = labels[0]
        for lab in labels[1:]:
            out = self.union(out, lab, node, f"added at {node.name!r} to a fixed channel space")
        return out

    def spec(self) -> PermutationSpec:
        groups, fixed = {}, {}
        for g in range(1, len(self.parent)):
            root = self.find(g)
            if root == g:
                if not self.axes[g]:
                    continue
                groups[self.names[g]] = Group(self.names[g], self.size[g], self.axes[g], self.fallback_sites(g))
            elif root == _FIXED and g in self.fixed_reason and "logits" not in self.fixed_reason[g]:
                fixed[self.names[g]] = self.fixed_reason[g]
        return PermutationSpec(groups, fixed)


def derive_spec(model: nn.Module, example: torch.Tensor) -> PermutationSpec:
    """The permutation groups of ``model``, from its fx graph and one forward pass on ``example``
    (an input batch of the right shape; used only for the shapes of flattened maps).

    >>> from convergent.models import build_model
    >>> spec = derive_spec(build_model("small_cnn", 1, 10, 28), torch.zeros(1, 1, 28, 28))
    >>> [(name, g.size) for name, g in spec.groups.items()]
    [('features.conv1', 16), ('features.conv2', 32), ('features.conv3', 32), ('features.conv4', 64), ('classifier.fc1', 128)]
    """
    graph = trace(model)
    derivation = _Derivation(graph, output_shapes(graph, example))
    derivation.run()
    return derivation.spec()


# --------------------------------------------------------------------------- applying


def _index(perm: np.ndarray, repeat: int) -> np.ndarray:
    perm = np.asarray(perm)
    return (perm[:, None] * repeat + np.arange(repeat)[None, :]).ravel()


def permute_state(state: dict, spec: PermutationSpec, perms: dict[str, np.ndarray]) -> dict:
    """A new state_dict with every group's permutation applied to all its axes."""
    out = dict(state)
    for name, group in spec.groups.items():
        perm = np.asarray(perms[name])
        if sorted(perm.tolist()) != list(range(group.size)):
            raise ValueError(f"permutation of group {name!r} is not a permutation of {group.size} units")
        for ax in group.axes:
            index = torch.as_tensor(_index(perm, ax.repeat), device=out[ax.key].device)
            out[ax.key] = out[ax.key].index_select(ax.axis, index)
    return out


def permuted(model: nn.Module, spec: PermutationSpec, perms: dict[str, np.ndarray]) -> nn.Module:
    """A copy of ``model`` with ``perms`` applied: computes the same function."""
    import copy

    clone = copy.deepcopy(model)
    clone.load_state_dict(permute_state(model.state_dict(), spec, perms))
    return clone


def inverse(perms: dict) -> dict:
    """The permutations that undo ``perms``."""
    return {k: np.argsort(np.asarray(v)) for k, v in perms.items()}

"""A network as a torch.fx graph: where its probe points are, and cutting it there.

The functional tests need more of a network than forward hooks give: the permutation groups of
its channels (:mod:`convergent.permutation`) come from following every tensor through the graph,
activation matching reads tensors that no module owns (torchvision's BasicBlock applies one ReLU
module twice), and stitching runs the bottom of one network into the top of another, which
needs the network cut in two at a probe point. All three use the graph that
``torch.fx.symbolic_trace`` records, with the probe modules kept as nodes of their own.

Models from outside the zoo (torchvision, timm, factories) have no probe points; they are
traced with torchvision's node-naming tracer, so that a layer is found by the name
``convergent layers`` shows (a module, whose last node is its output, or an FX node name such
as ``layer1.0.add``: :func:`layer_node`). No module is kept whole there, not even torchvision's
``Conv2dNormActivation`` that probing keeps as one node: the permutation groups need to see the
convolution and batch norm inside; a module's output is the same tensor either way.

>>> from convergent.models import build_model
>>> net = build_model("small_cnn", 1, 10, 28)
>>> graph = trace(net)
>>> probe_node(graph, net, "conv2").target
'features.relu2'
"""

from __future__ import annotations

import torch
from torch import fx, nn


class _ProbeTracer(fx.Tracer):
    """torch.fx's tracer, keeping the modules named in ``leaves`` as single nodes: a probe point
    that is an identity module would otherwise be traced through and leave no node behind."""

    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name in self.leaves or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` as an fx GraphModule sharing its submodules (and so its weights), with every probe
    point (``model.probe_points``, if any) a node of its own. For a model without probe points
    the GraphModule carries ``node_names`` (node -> the name ``convergent layers`` shows).

    Raises ``ValueError`` naming the model's class when its forward cannot be traced symbolically
    (data-dependent control flow, for one).
    """
    points = getattr(model, "probe_points", None)
    tracer = _ProbeTracer(set(points.values())) if points is not None else _named_tracer()
    was_training = model.training
    model.eval()  # what is probed and compared: some models trace other branches in training
    try:
        graph = tracer.trace(model)
    except Exception as error:  # fx raises several types (TraceError, TypeError, ...)
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {error}); "
            "permutation alignment and stitching need a symbolically traceable forward") from error
    finally:
        model.train(was_training)
    module = fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)
    if points is None:
        from convergent.probing import _display_names

        module.node_names = _display_names(tracer.node_to_qualname)
    return module


def _named_tracer() -> fx.Tracer:
    """torchvision's node-naming tracer, keeping whole only the modules that cannot be traced
    (timm's registered ones, when timm is loaded)."""
    import math
    import sys

    import torchvision
    from torchvision.models.feature_extraction import NodePathTracer

    leaves, functions = [], ()
    if "timm" in sys.modules:
        try:
            from timm.layers import get_notrace_functions, get_notrace_modules

            leaves, functions = list(get_notrace_modules()), tuple(get_notrace_functions())
        except ImportError:
            pass
    return NodePathTracer(leaf_modules=leaves, autowrap_modules=(math, torchvision.ops), autowrap_functions=functions)


def node_name(graph: fx.GraphModule, node: fx.Node) -> str:
    """The name a user knows a node by: ``convergent layers``' name where the graph has one
    (``layer1.0.conv2``), else fx's own (``layer1_0_conv2``)."""
    names = getattr(graph, "node_names", None) or {}
    return names.get(node, node.name)


def probe_node(graph: fx.GraphModule, model: nn.Module, layer: str) -> fx.Node:
    """The graph node whose output is probe layer ``layer`` of ``model`` (``model.probe_points``)."""
    points = getattr(model, "probe_points", {})
    if layer not in points:
        raise KeyError(f"{layer!r} is not a probe layer of {type(model).__name__}; known: {list(points)}")
    target = points[layer]
    nodes = [n for n in graph.graph.nodes if n.op == "call_module" and n.target == target]
    if len(nodes) != 1:
        raise ValueError(f"probe layer {layer!r} (module {target!r}) is called {len(nodes)} times in the "
                         "forward pass; a probe point must be one tensor")
    return nodes[0]


def layer_node(graph: fx.GraphModule, model: nn.Module, layer: str, target: str | None = None) -> fx.Node:
    """The node whose output is layer ``layer``: a zoo probe point, or for any other model the node
    named ``target`` (default ``layer``: a module or FX node name as in ``model.layers``), or else
    the last node inside module ``target``, as ``torchvision.models.feature_extraction`` selects it.

    >>> import torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> layer_node(trace(net), net, "layer2.1").name
    'layer2_1_relu_1'
    """
    if getattr(model, "probe_points", None) is not None:
        return probe_node(graph, model, layer)
    target = layer if target is None else target
    names = getattr(graph, "node_names", None)
    if names is None:
        raise ValueError(f"{type(model).__name__}: this graph was not traced by convergent.network_graph.trace")
    by_name = {name: node for node, name in names.items()}
    if target in by_name:
        return by_name[target]
    inside = [node for node, name in names.items() if name.startswith(target + ".")]
    if not inside:
        raise KeyError(f"layer {layer!r}: no node or module {target!r} in the graph of {type(model).__name__}")
    return inside[-1]


def _copy(graph: fx.GraphModule, nodes, env: dict, new: fx.Graph) -> None:
    for node in nodes:
        env[node] = new.node_copy(node, lambda n: env[n])


def outputs_module(graph: fx.GraphModule, nodes: list[fx.Node]) -> fx.GraphModule:
    """A module that runs ``graph`` as far as needed and returns the outputs of ``nodes`` (a tuple,
    in order). Reads tensors such as the second call of a reused ReLU, which hooks cannot tell apart."""
    wanted = set(nodes)
    last = max(i for i, n in enumerate(graph.graph.nodes) if n in wanted)
    new, env = fx.Graph(), {}
    _copy(graph, [n for i, n in enumerate(graph.graph.nodes) if i <= last], env, new)
    new.output(tuple(env[n] for n in nodes))
    return _pruned(graph, new)


def _pruned(root: fx.GraphModule, graph: fx.Graph) -> fx.GraphModule:
    module = fx.GraphModule(root, graph)
    module.graph.eliminate_dead_code()  # needs the owning module to tell impure calls apart
    module.recompile()
    return module


def split(graph: fx.GraphModule, cut: fx.Node) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``(bottom, top)`` with ``top(bottom(x)) == graph(x)``: ``bottom`` returns the output of
    ``cut``, ``top`` takes it as its only input.

    The cut must be clean: nothing after it may use a tensor from before it other than through
    ``cut`` (a skip connection that jumps over the cut would be lost). Residual networks are
    clean at their block outputs, where the probe points are; elsewhere this raises.
    """
    order = list(graph.graph.nodes)
    at = order.index(cut)
    bottom = outputs_module(graph, [cut])
    # outputs_module returns a 1-tuple; unwrap it so the bottom's output is the tensor itself
    out = next(n for n in bottom.graph.nodes if n.op == "output")
    out.args = (out.args[0][0],)
    bottom.recompile()

    new, env = fx.Graph(), {}
    env[cut] = new.placeholder("features")
    for node in order[at + 1:]:
        for used in node.all_input_nodes:
            if used in env:
                continue
            if used.op == "get_attr":
                env[used] = new.node_copy(used)
                continue
            raise ValueError(
                f"cannot cut the network at {node_name(graph, cut)!r}: node {node_name(graph, node)!r} after "
                f"the cut uses {node_name(graph, used)!r} from before it (a connection that skips the cut)")
        env[node] = new.node_copy(node, lambda n: env[n])
    return bottom, _pruned(graph, new)


def cut(model: nn.Module, layer: str, target: str | None = None,
        graph: fx.GraphModule | None = None) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``model`` split at layer ``layer`` (:func:`layer_node`) into ``(bottom, top)`` (:func:`split`)."""
    graph = trace(model) if graph is None else graph
    return split(graph, layer_node(graph, model, layer, target))


@torch.no_grad()
def output_shapes(graph: fx.GraphModule, example: torch.Tensor) -> dict[fx.Node, tuple[int, ...]]:
    """The shape of every tensor node's output on ``example`` (one forward pass, eval mode)."""
    shapes: dict[fx.Node, tuple[int, ...]] = {}

    class _Shapes(fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if isinstance(value, torch.Tensor):
                shapes[node] = tuple(value.shape)
            return value

    was_training = graph.training
    graph.eval()
    try:
        _Shapes(graph).run(example)
    finally:
        graph.train(was_training)
    return shapes


def paired_rows(ya: torch.Tensor, yb: torch.Tensor, positions: int | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two networks' outputs at one layer for the same inputs as float64 ``[rows, units]``
    matrices with paired rows: one row per input for vectors; for maps, one row per input and
    spatial position, or ``positions`` positions per input drawn at random (the same ones for
    both networks), which keeps second moments of large maps cheap."""
    if ya.shape[0] != yb.shape[0] or ya.shape[2:] != yb.shape[2:]:
        raise ValueError(f"outputs of shapes {tuple(ya.shape)} and {tuple(yb.shape)} are not paired")
    if ya.ndim == 2:
        return ya.double(), yb.double()
    n, spatial = ya.shape[0], int(torch.tensor(ya.shape[2:]).prod())
    ya, yb = ya.reshape(n, ya.shape[1], spatial), yb.reshape(n, yb.shape[1], spatial)
    if positions is not None and positions < spatial:
        pick = torch.rand(n, spatial, generator=generator).argsort(dim=1)[:, :positions].to(ya.device)
        ya = ya.gather(2, pick[:, None, :].expand(-1, ya.shape[1], -1))
        yb = yb.gather(2, pick[:, None, :].expand(-1, yb.shape[1], -1))
    return (ya.transpose(1, 2).reshape(-1, ya.shape[1]).double(),
            yb.transpose(1, 2).reshape(-1, yb.shape[1]).double())

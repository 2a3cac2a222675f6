"""Reading any layer of any PyTorch model by name: resolved probes and the runner that reads them.

A layer is named as ``named_modules()`` names modules (``layer3.5``, ``features.1.0.block.3``) or
as torchvision's FX feature extraction names graph nodes (``layer1.0.add``, ``relu_1``: outputs
of functional ops). Models that trace with ``torch.fx`` are read through the traced graph; models
that do not are read through forward hooks on their modules (there only module names exist).
A layer's output can be a tuple, a dict or a ``ModelOutput``: an output selector (index, key, or
a path of them) picks one tensor.

Every layer's tensor is brought into one of three **kinds**, whatever its layout:

* ``spatial``: a map, canonically ``[N, C, H, W]``; channels-last ``[N, H, W, C]`` maps
  (ConvNeXt blocks, Swin) are declared (``layout: NHWC``) or detected (see :func:`detect_layout`);
* ``tokens``: a sequence ``[N, T, C]`` (or ``[N, C, T]`` after ``Conv1d``), canonically
  ``[N, C, T, 1]``: a one-column map, so rows are (input, token) pairs sampled like positions;
* ``vector``: ``[N, C]``; a map or sequence with a single position is a vector.

:func:`resolve_probes` turns configured layers (:class:`convergent.architectures.LayerSpec`) into
:class:`Probe` objects, checking them on a probe batch; :class:`ProbeRunner` returns every probe's
canonical tensor for a batch. Unsupported shapes, unknown names, modules that run more than once
per forward pass in a model that does not trace: clear errors naming the layer and what to do.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import fx, nn

from convergent.architectures import LAYER_NAME, LAYOUTS, LayerSpec

KINDS = ("spatial", "tokens", "vector")
# Modules that act on the last dimension: a 4-D output of one is channels-last.
_LAST_DIM_MODULES = (nn.Linear, nn.LayerNorm)
# Modules whose 3-D output is [N, C, L] (channels first), not [N, T, C].
_CHANNELS_FIRST_1D = (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, nn.InstanceNorm1d, nn.MaxPool1d,
                      nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
LAYERS_HINT = "run `convergent layers` to list every layer this model has"


class ProbeError(ValueError):
    """A configured layer cannot be read; the message names it and says what to do."""


@dataclass(frozen=True)
class Probe:
    """How to read one layer: ``via`` ``fx`` (graph node ``target``) or ``hook`` (module ``target``),
    the ``output`` selector, the tensor ``layout`` and the resulting ``kind`` and canonical ``shape``
    ``(C, H, W)`` (tokens: ``(C, T, 1)``; vectors ``(C, 1, 1)``)."""

    name: str
    target: str
    via: str
    output: tuple = ()
    layout: str = ""  # "" until resolved (declared or detected)
    kind: str = "spatial"
    shape: tuple = ()
    signed: bool = False  # negative values seen on the probe batch
    copy: bool = True  # whether a later in-place op of the forward pass overwrites the value

    @property
    def units(self) -> int:
        return int(self.shape[0])


# ----------------------------------------------------------------------------------------------
# Layouts and kinds


def detect_layout(shape: tuple, producer: nn.Module | None = None) -> str:
    """The layout of an output of ``shape`` (batch first) made by ``producer`` (a module or None).

    4-D: channels-last when a module acting on the last dimension (``Linear``, ``LayerNorm``, exact
    types) made it, or when dims 1 and 2 are equal and dim 3 differs (square inputs give square
    maps: ``[N, 8, 8, 384]``); otherwise channels-first. 3-D: ``[N, C, L]`` after 1-D convolutions,
    pooling and norms, otherwise ``[N, T, C]``. Declare ``layout:`` where this guesses wrong.
    """
    if len(shape) == 2:
        return "NC"
    if len(shape) == 3:
        return "NCT" if isinstance(producer, _CHANNELS_FIRST_1D) else "NTC"
    if len(shape) == 4:
        if producer is not None and type(producer) in _LAST_DIM_MODULES:
            return "NHWC"
        if shape[1] == shape[2] and shape[2] != shape[3]:
            return "NHWC"
        return "NCHW"
    raise ProbeError(f"unsupported output shape {list(shape)}")


_LAYOUT_NDIM = {"NCHW": 4, "NHWC": 4, "NTC": 3, "NCT": 3, "NC": 2}


def canonical(tensor: torch.Tensor, layout: str) -> torch.Tensor:
    """``[N, C, H, W]`` for maps, ``[N, C, T, 1]`` for sequences, ``[N, C]`` for vectors (views)."""
    if layout == "NCHW":
        out = tensor
    elif layout == "NHWC":
        out = tensor.permute(0, 3, 1, 2)
    elif layout == "NTC":
        out = tensor.permute(0, 2, 1).unsqueeze(-1)
    elif layout == "NCT":
        out = tensor.unsqueeze(-1)
    else:
        return tensor
    if out.shape[2] * out.shape[3] == 1:
        return out.flatten(1)  # one position per input: a vector (global pooling, a single token)
    return out


def kind_of(layout: str, canonical_shape: tuple) -> str:
    if len(canonical_shape) == 2:
        return "vector"
    return "tokens" if layout in ("NTC", "NCT") else "spatial"


def select_output(value, path: tuple, layer: str):
    """Follow the selector ``path`` (indices, keys) into a tuple/list/dict/ModelOutput ``value``."""
    for step in path:
        try:
            if isinstance(value, Mapping) or (isinstance(step, str) and not hasattr(value, step)):
                value = value[step]
            elif isinstance(step, str):
                value = getattr(value, step)
            else:
                value = value[step]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProbeError(f"layer {layer!r}: output {describe_value(value)} has no element {step!r}") from None
    if not isinstance(value, torch.Tensor):
        hint = " (choose one with `output:`, e.g. {layer: %s, output: %s})" % (layer, _first_key(value))
        raise ProbeError(f"layer {layer!r} outputs {describe_value(value)}, not a tensor{hint}")
    return value


def _first_key(value):
    if isinstance(value, Mapping):
        return next(iter(value), 0)
    return 0


def describe_value(value, depth: int = 0) -> str:
    """``Tensor[2, 5, 8]``, ``tuple(Tensor[2, 5, 8], tuple(...))``, ``dict(out: Tensor[...])``."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)}"
    if depth > 1:
        return type(value).__name__ + "(...)"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}: {describe_value(v, depth + 1)}" for k, v in value.items())
        return f"{type(value).__name__}({inner})"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(describe_value(v, depth + 1) for v in value)})"
    return type(value).__name__


# ----------------------------------------------------------------------------------------------
# Tracing


def _copy_outputs(value):
    """Detached copies of every tensor in ``value``: a later in-place op of the forward pass
    (``out += identity``, ``ReLU(inplace=True)``) must not change what was captured."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_copy_outputs(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_copy_outputs(v) for v in value)
    if isinstance(value, dict):
        copied = {k: _copy_outputs(v) for k, v in value.items()}
        try:
            return type(value)(copied)
        except TypeError:
            return copied
    return value


def _detached_outputs(value):
    """``value`` with its tensors detached but not copied (they share storage and version counter)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return type(value)(_detached_outputs(v) for v in value)
    return value


def _versions(value) -> tuple:
    """The version counters of the tensors in ``value``: an in-place op on a tensor, or on any view
    of it, increments its counter."""
    if isinstance(value, torch.Tensor):
        return (value._version,)
    if isinstance(value, Mapping):
        return tuple(v for item in value.values() for v in _versions(item))
    if isinstance(value, (tuple, list)):
        return tuple(v for item in value for v in _versions(item))
    return ()


def _snapshot(value):
    """A copy of ``value`` for reading, and the original with its version counters, to find out
    after the forward pass whether anything changed it in place (then it must be copied)."""
    return _copy_outputs(value), (_detached_outputs(value), _versions(value))


def _attached_outputs(value):
    """Like :func:`_copy_outputs`, keeping the autograd graph (for receptive fields)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_attached_outputs(v) for v in value) if not hasattr(value, "_fields") else value
    return value


def _tracer(leaf_names: frozenset[str] = frozenset()):
    """torchvision's node-naming tracer, with its default leaves (``torchvision.ops``), timm's
    registered leaves when timm is loaded, and the modules ``leaf_names`` kept whole."""
    import inspect
    import sys

    import torchvision
    from torchvision.models.feature_extraction import NodePathTracer

    leaf_types = [obj for _, obj in inspect.getmembers(torchvision.ops)
                  if inspect.isclass(obj) and issubclass(obj, nn.Module)]
    autowrap_functions: tuple = ()
    if "timm" in sys.modules:
        try:
            from timm.layers import get_notrace_functions, get_notrace_modules

            leaf_types += list(get_notrace_modules())
            autowrap_functions = tuple(get_notrace_functions())
        except ImportError:
            pass

    class Tracer(NodePathTracer):
        def is_leaf_module(self, m: nn.Module, module_qualname: str) -> bool:
            return module_qualname in leaf_names or super().is_leaf_module(m, module_qualname)

    return Tracer(leaf_modules=leaf_types, autowrap_modules=(math, torchvision.ops),
                  autowrap_functions=autowrap_functions)


@dataclass
class Traced:
    graph: fx.Graph
    root: nn.Module
    names: dict  # fx.Node -> torchvision node name, in forward order


def trace(module: nn.Module, leaf_names=frozenset()) -> Traced:
    """Trace ``module`` in eval mode (raises whatever torch.fx raises when it cannot)."""
    was_training = module.training
    module.eval()
    try:
        tracer = _tracer(frozenset(leaf_names))
        graph = tracer.trace(module)
    finally:
        module.train(was_training)
    return Traced(graph, tracer.root, _display_names(tracer.node_to_qualname))


def _display_names(qualnames: dict) -> dict:
    """torchvision's node names, except that a module called once is named by its exact path:
    torchvision drops a trailing ``_<digits>`` before numbering repeats, which renames modules such
    as ViT's ``encoder.layers.encoder_layer_0``."""
    calls: dict[str, int] = {}
    for node in qualnames:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    names = {}
    taken = set(qualnames.values())
    for node, qualname in qualnames.items():
        if node.op == "call_module" and calls[node.target] == 1 and node.target != qualname \
                and node.target not in taken:
            taken.add(node.target)
            names[node] = node.target
        else:
            names[node] = qualname
    return names


def find_node(traced: Traced, target: str) -> fx.Node | None:
    """The node named ``target``, or else the last node inside module ``target`` (its output),
    as torchvision's ``create_feature_extractor`` selects them."""
    by_name = {name: node for node, name in traced.names.items()}
    if target in by_name:
        return by_name[target]
    inside = [node for node, name in traced.names.items() if name.startswith(target + ".")]
    return inside[-1] if inside else None


def feature_graph(traced: Traced, nodes: dict[str, fx.Node], capture: dict) -> fx.GraphModule:
    """A GraphModule returning ``{name: capture[name](node's value)}`` and computing nothing after
    the last of them (``traced``'s graph is rewritten: trace again for another one)."""
    graph = traced.graph
    for node in [n for n in graph.nodes if n.op == "output"]:
        graph.erase_node(node)
    copies = {}
    for name, node in nodes.items():
        with graph.inserting_after(node):
            copies[name] = graph.call_function(capture[name], (node,))
    order = list(graph.nodes)
    last = max(order.index(c) for c in copies.values())
    for node in reversed(order[last + 1:]):
        graph.erase_node(node)  # later nodes cannot feed earlier ones: the graph is in execution order
    graph.output(copies)
    graph.lint()
    return fx.GraphModule(traced.root, graph, type(traced.root).__name__ + "Probes")


# ----------------------------------------------------------------------------------------------
# Running probes


class ProbeRunner:
    """Reads probes from a model: ``runner(x)`` → ``{name: canonical tensor}``.

    ``prepare`` adapts a batch to the model (grey images given the channels the model expects).
    With ``raw=True`` the captured outputs are returned as they are (selection and layout skipped):
    used while probes are being resolved; ``grad=True`` keeps them attached to the autograd graph.
    A probe's value is copied only when ``Probe.copy`` says a later in-place op of the forward pass
    (``out += identity``, ``ReLU(inplace=True)``) overwrites it; ``detect=True`` copies everything
    and records which captured values were overwritten in :attr:`mutated`. Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, module: nn.Module, probes: dict[str, Probe], prepare=None, raw: bool = False,
                 grad: bool = False, detect: bool = False):
        self.module, self.probes, self.raw, self.grad, self.detect = module, dict(probes), raw, grad, detect
        self.prepare = prepare or (lambda x: x)
        self.mutated: set[str] = set()
        self._capture = {name: _attached_outputs if grad else _snapshot if detect
                         else _copy_outputs if p.copy else _detached_outputs for name, p in self.probes.items()}
        self.calls: dict[str, int] = {}
        self._called: list[str] = []  # hooked probes as first called
        self._rank: dict[str, tuple] = {}
        self._handles = []
        self._graph = None
        fx_probes = {n: p for n, p in self.probes.items() if p.via == "fx"}
        if fx_probes:
            leaves = frozenset(p.target for p in fx_probes.values() if _keep_whole(p.target, fx_probes.values(), module))
            traced = trace(module, leaves)
            nodes = {}
            for name, p in fx_probes.items():
                node = find_node(traced, p.target)
                if node is None:
                    raise ProbeError(f"layer {p.target!r} is not a node of the traced model; {LAYERS_HINT}")
                nodes[name] = node
            position = {node: i for i, node in enumerate(traced.graph.nodes)}
            rank = {name: (position[node], 1) for name, node in nodes.items()}
            for name, p in self.probes.items():  # hooked modules run inside a probed module's node
                if p.via == "hook":
                    outer = next((nodes[n] for n, q in fx_probes.items() if p.target.startswith(q.target + ".")), None)
                    rank[name] = (position[outer] if outer is not None else len(position), 0)
            self._rank = rank
            self._graph = feature_graph(traced, nodes, self._capture).eval()
        hooked = {n: p for n, p in self.probes.items() if p.via == "hook"}
        if hooked:
            modules = dict(module.named_modules())
            self._captured: dict[str, object] = {}
            for name, p in hooked.items():
                self._handles.append(modules[p.target].register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(_module, _inputs, output):
            self.calls[name] = self.calls.get(name, 0) + 1
            if name not in self._called:
                self._called.append(name)
            self._captured[name] = self._capture[name](output)
        return hook

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.prepare(x)
        self.calls.clear()
        if self._handles:
            self._captured = {}
        raw = {}
        if self._graph is not None:
            raw.update(self._graph(x))
        if self._handles:
            if self._graph is None:
                self.module(**x) if isinstance(x, Mapping) else self.module(x)  # text: ids and mask
            raw.update(self._captured)
        if self.detect:
            self.mutated = {name for name, (_, (original, versions)) in raw.items()
                            if _versions(original) != versions}
            raw = {name: value for name, (value, _) in raw.items()}
        if self.raw:
            return raw
        return {name: canonical(select_output(raw[name], p.output, name), p.layout)
                for name, p in self.probes.items()}

    @property
    def order(self) -> list[str]:
        """The probes in forward order (hooked ones as first called, after a forward pass)."""
        called = {name: i for i, name in enumerate(self._called)}
        if not self._rank:
            return list(self._called)
        return sorted(self._rank, key=lambda name: (*self._rank[name], called.get(name, 0)))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hooked_inside_leaves(specs: list[LayerSpec], modules: dict) -> set[str]:
    """Module targets read by hooks inside the FX graph: a probed module is traced as one node (its
    exact output, tuples included), so probed modules inside it run within that node and are
    hooked. A probed module with an FX node name inside it cannot be one node: it is read by its
    last inner node, which has no tuple to select from."""
    module_targets = sorted({s.target for s in specs if s.target in modules and s.target},
                            key=lambda t: t.count("."))
    fx_only = [s.target for s in specs if s.target not in modules]
    leaves, hooked = [], set()
    for target in module_targets:
        if any(target.startswith(leaf + ".") for leaf in leaves):
            hooked.add(target)
        elif not any(f.startswith(target + ".") for f in fx_only):
            leaves.append(target)
    for spec in specs:
        if spec.output and spec.target in modules and spec.target not in leaves and spec.target not in hooked:
            inner = [f for f in fx_only if f.startswith(spec.target + ".")]
            raise ProbeError(f"layer {spec.name!r}: the output of {spec.target!r} is selected with `output:`, but "
                             f"FX node {inner[0]!r} inside it is probed too, so the module cannot be read whole; "
                             "probe them in separate experiments")
    return hooked


def _keep_whole(target: str, probes, module: nn.Module) -> bool:
    """Trace a probed module as one node (its exact output, tuples included) unless another probe
    lies inside it."""
    return target in dict(module.named_modules()) and target != "" and not any(
        p.target.startswith(target + ".") for p in probes)


# ----------------------------------------------------------------------------------------------
# Resolving configured layers


def default_layer_names(module: nn.Module) -> list[str]:
    """Every block's output: the members of each ``nn.Sequential``/``nn.ModuleList`` whose members
    are all of one class that is not a ``torch.nn`` built-in (ResNet's ``layer1.0``, ConvNeXt's
    ``features.1.0``, ViT's ``encoder.layers.encoder_layer_0``, timm's ``stages.0.blocks.0``),
    innermost level only; a model without such containers: its top-level children."""
    candidates = []
    for name, container in module.named_modules():
        if not isinstance(container, (nn.Sequential, nn.ModuleList)) or len(container) == 0:
            continue
        classes = {type(child) for child in container.children()}
        if len(classes) == 1 and not next(iter(classes)).__module__.startswith("torch.nn"):
            candidates += [f"{name}.{child}" if name else child for child, _ in container.named_children()]
    blocks = [c for c in candidates if not any(o.startswith(c + ".") for o in candidates)]
    return blocks or [name for name, _ in module.named_children()]


def _close_names(name: str, names: list[str], n: int = 5) -> list[str]:
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if len(close) < n:  # names inside the same parent are "near" too
        parent = name.rsplit(".", 1)[0] + "." if "." in name else ""
        close += [x for x in names if parent and x.startswith(parent) and x not in close][: n - len(close)]
    return close


def unknown_layer_error(name: str, names: list[str]) -> ProbeError:
    close = _close_names(name, names)
    nearby = f"; nearby names: {close}" if close else ""
    return ProbeError(f"config key 'model.layers': {name!r} is not a layer of this model{nearby}; {LAYERS_HINT}")


def try_trace(module: nn.Module) -> tuple[Traced | None, str | None]:
    try:
        return trace(module), None
    except Exception as error:  # noqa: BLE001 (any failure of symbolic tracing means: use hooks)
        return None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def resolve_probes(module: nn.Module, specs: list[LayerSpec] | None, batch: torch.Tensor,
                   prepare=None, mode: str = "auto") -> dict[str, Probe]:
    """Probes for the configured layers (``specs``; None: the default layers), checked on ``batch``.

    ``mode``: ``auto`` (FX when the model traces, hooks otherwise), ``fx`` or ``hooks``. The zoo's
    models carry ``probe_points`` (layer name → module): those are always hooked, as before. The
    target ``""`` is the model's own output (e.g. ``hidden_states`` of a ``ModelOutput``, selected
    with ``output``); it is read by a hook on the model, so the other targets must be modules.
    """
    points = getattr(module, "probe_points", None)
    modules = dict(module.named_modules())
    default = specs is None
    if points is not None:
        if default:
            specs = [LayerSpec(name, name) for name in points]
        for spec in specs:
            if spec.target not in points:
                raise unknown_layer_error(spec.target, list(points))
        # The zoo's maps are channels-first by construction: no layout guessing.
        draft = {s.name: Probe(s.name, points[s.target], "hook", s.output, s.layout or "") for s in specs}
        return _check(module, draft, batch, prepare, drop_unsupported=False, channels_first=True)
    if default:
        specs = [LayerSpec(name, name) for name in default_layer_names(module)]
    if any(s.target == "" for s in specs):
        mode = "hooks"  # the model's own output (target ""): a hook on the model itself
    traced, why_not = (None, "hooks were asked for") if mode == "hooks" else try_trace(module)
    if mode == "fx" and traced is None:
        raise ProbeError(f"{type(module).__name__} does not trace with torch.fx ({why_not})")
    if traced is not None:
        node_names = list(traced.names.values())
        for spec in specs:
            if find_node(traced, spec.target) is None:
                raise unknown_layer_error(spec.target, node_names + [m for m in modules if m])
        hooked = _hooked_inside_leaves(specs, modules)
        draft = {s.name: Probe(s.name, s.target, "hook" if s.target in hooked else "fx", s.output, s.layout or "")
                 for s in specs}
        return _check(module, draft, batch, prepare, drop_unsupported=default)
    for spec in specs:
        if spec.target not in modules:
            close = _close_names(spec.target, [m for m in modules if m])
            nearby = f" (nearby modules: {close})" if close else ""
            raise ProbeError(
                f"config key 'model.layers': {spec.target!r} is not a module of {type(module).__name__}{nearby}. "
                f"Outputs of functional ops (FX node names) need a model that traces with torch.fx, and this one "
                f"does not ({why_not}); forward hooks read modules only. {LAYERS_HINT}")
    draft = {s.name: Probe(s.name, s.target, "hook", s.output, s.layout or "") for s in specs}
    return _check(module, draft, batch, prepare, drop_unsupported=default, why_not_fx=why_not)


def observe(module, draft: dict[str, Probe], batch, prepare):
    """One forward pass of ``batch`` (moved to the module's device and dtype) in eval mode, the
    module's training flag restored after: ``(batch, raw outputs by probe, calls per probe,
    forward order, probes whose tensors a later in-place op changed)``."""
    parameter = next((p for p in module.parameters() if p.is_floating_point()), None)
    batch = move_batch(batch, parameter)
    was_training = module.training
    module.eval()
    try:
        with ProbeRunner(module, draft, prepare, raw=True, detect=True) as runner, torch.no_grad():
            raw = runner(batch)
            return batch, raw, dict(runner.calls), list(runner.order), set(runner.mutated)
    finally:
        module.train(was_training)


def _check(module, draft: dict[str, Probe], batch, prepare, drop_unsupported: bool,
           why_not_fx: str | None = None, channels_first: bool = False) -> dict[str, Probe]:
    """Run ``batch`` once; fix each probe's layout, kind, shape and sign, or raise (or, for default
    layers, leave out the ones that cannot be read)."""
    modules = dict(module.named_modules())
    batch, raw, calls, order, mutated = observe(module, draft, batch, prepare)
    resolved = {}
    for name, probe in sorted(draft.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)):
        try:
            if probe.via == "hook" and calls.get(name, 0) != 1:
                raise _call_count_error(probe, calls.get(name, 0), why_not_fx, module)
            tensor = select_output(raw[name], probe.output, name)
            resolved[name] = replace(_finish(probe, tensor, modules.get(probe.target), batch_size(batch),
                                             channels_first),
                                     copy=name in mutated)
        except ProbeError:
            if drop_unsupported:
                continue
            raise
    if not resolved:
        raise ProbeError(f"no default layer of {type(module).__name__} has a supported output; list layers "
                         f"in config key 'model.layers' ({LAYERS_HINT})")
    for name in resolved:
        if not LAYER_NAME.match(name):
            raise ProbeError(f"layer {name!r} cannot name files; list it as {{layer: {name}, name: <simple name>}}")
    return resolved


def _call_count_error(probe: Probe, count: int, why_not_fx, module) -> ProbeError:
    if count == 0:
        return ProbeError(f"layer {probe.name!r}: module {probe.target!r} does not run in the forward pass "
                          f"of {type(module).__name__} (in eval mode); {LAYERS_HINT}")
    return ProbeError(
        f"layer {probe.name!r}: module {probe.target!r} runs {count} times in one forward pass, so a hook "
        f"cannot tell its calls apart, and the model does not trace with torch.fx ({why_not_fx}); probe a "
        f"module that runs once (a parent or a following module); {LAYERS_HINT}")


def _finish(probe: Probe, tensor: torch.Tensor, producer, batch_size: int, channels_first: bool = False) -> Probe:
    shape = tuple(tensor.shape)
    if len(shape) not in (2, 3, 4):
        raise ProbeError(f"layer {probe.name!r} outputs shape {list(shape)}; supported: [N, C] vectors, "
                         "[N, T, C] token sequences, [N, C, H, W] or [N, H, W, C] maps")
    if shape[0] != batch_size:
        raise ProbeError(f"layer {probe.name!r} outputs shape {list(shape)} for a batch of {batch_size}: "
                         "the first dimension must be the batch (a sequence-first layer? probe a batch-first one)")
    layout = probe.layout or ({4: "NCHW", 2: "NC"}.get(len(shape)) if channels_first else None) \
        or detect_layout(shape, producer)
    if layout not in LAYOUTS or _LAYOUT_NDIM[layout] != len(shape):
        raise ProbeError(f"layer {probe.name!r}: layout {layout!r} does not fit its output shape {list(shape)}")
    canon = canonical(tensor, layout)
    kind = kind_of(layout, tuple(canon.shape))
    dims = tuple(canon.shape[1:]) + (1,) * (4 - canon.ndim)
    signed = tensor.device.type != "meta" and bool((tensor < 0).any())  # meta: shapes only (planning)
    return replace(probe, layout=layout, kind=kind, shape=tuple(int(d) for d in dims), signed=signed)


def batch_size(batch) -> int:
    """Inputs in a batch: a tensor's first dimension, or a text batch's (``{"input_ids", ...}``)."""
    if isinstance(batch, Mapping):
        return int(next(iter(batch.values())).shape[0])
    return len(batch)


def move_batch(batch, parameter: torch.Tensor | None):
    """``batch`` on the model's device; image batches also in its float type (token ids stay ints)."""
    if parameter is None:
        return batch
    if isinstance(batch, Mapping):
        return {k: v.to(device=parameter.device) for k, v in batch.items()}
    if batch.device.type == "meta":
        return batch
    return batch.to(dtype=parameter.dtype, device=parameter.device)


def probe_batch(in_channels: int, image_size: int, n: int = 3, seed: int = 0) -> torch.Tensor:
    """A small random batch (standard normal, like normalised images) for checking probes; three
    inputs, so that a batch dimension is not mistaken for a token or channel dimension of 2."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, in_channels, image_size, image_size, generator=generator)

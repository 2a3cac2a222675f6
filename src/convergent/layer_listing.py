"""Every layer of a model, for ``convergent layers``: what can be probed, and how."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from convergent.probing import (Probe, ProbeError, _finish, _first_key, batch_size,
                                default_layer_names, describe_value, find_node, observe, try_trace)


def list_layers(module: nn.Module, batch: torch.Tensor, prepare=None) -> tuple[str, list[dict]]:
    """Every layer of ``module`` in forward order, run on ``batch``: how the model is read
    (``fx``, or ``hooks`` with the reason it does not trace) and one row per layer with ``name``,
    ``output`` (its value's description), ``kind``, ``shape`` (canonical C, H, W), ``units``,
    ``signed`` and ``note`` (why it cannot be probed as it is, and what to do); ``probe`` holds
    the :class:`Probe` of the probe-able ones."""
    points = getattr(module, "probe_points", None)
    modules = dict(module.named_modules())
    traced, why_not = (None, "zoo model") if points is not None else try_trace(module)
    if points is not None:
        draft = {name: Probe(name, target, "hook") for name, target in points.items()}
        how = "hooks on the zoo's probe points"
    elif traced is not None:
        nodes = [(node, name) for node, name in traced.names.items() if node.op in ("call_module", "call_function",
                                                                                   "call_method")]
        draft = {name: Probe(name, name, "fx") for _, name in nodes}
        how = "fx (the model traces with torch.fx: module and FX node names)"
    else:
        draft = {name: Probe(name, name, "hook") for name in modules if name}
        how = f"hooks (module names only: the model does not trace with torch.fx, {why_not})"
    batch, raw, calls, order, _ = observe(module, draft, batch, prepare)
    names = order if points is not None or traced is None else list(draft)
    # The default layers are blocks (modules): mark the node that gives each block's output.
    defaults = {}
    if points is None:
        for block in default_layer_names(module):
            node = find_node(traced, block) if traced is not None else None
            defaults[traced.names[node] if node is not None else block] = block
    rows = []
    for name in names:
        probe, value = draft[name], raw.get(name)
        if not _holds_tensor(value):
            continue  # sizes, shapes, flags: nothing to probe
        row = {"name": name, "output": describe_value(value), "kind": "", "shape": "", "units": "",
               "signed": "", "note": "", "probe": None,
               "default": name in points if points is not None else defaults.get(name)}
        try:
            if probe.via == "hook" and calls.get(name, 0) != 1:
                row["note"] = f"runs {calls.get(name, 0)} times per forward pass: not probe-able by hooks"
            elif not isinstance(value, torch.Tensor):
                row["note"] = f"not a tensor: probe with {{layer: {name}, output: {_first_key(value)!r}}}" \
                    if isinstance(value, (tuple, list, Mapping)) else "not a tensor"
            else:
                done = _finish(probe, value, modules.get(probe.target), batch_size(batch),
                               channels_first=points is not None)
                row.update(kind=done.kind, shape=list(done.shape), units=done.units, signed=done.signed, probe=done)
        except ProbeError as error:
            row["note"] = str(error).replace(f"layer {name!r} ", "")
        rows.append(row)
    return how, rows


def _holds_tensor(value, depth: int = 0) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if depth > 2:
        return False
    if isinstance(value, Mapping):
        return any(_holds_tensor(v, depth + 1) for v in value.values())
    if isinstance(value, (tuple, list)):
        return any(_holds_tensor(v, depth + 1) for v in value)
    return False

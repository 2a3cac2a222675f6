"""Whether the functional stages can run on an experiment's model, known before any job runs.

Linear mode connectivity and stitching (`connectivity`, `stitch`) need the model's permutation
groups (:mod:`convergent.permutation`), derived from its torch.fx graph, and a clean cut of the
graph at every stitched layer (:func:`convergent.network_graph.split`). For the zoo both are
known to hold (tested for every architecture). For any other image model the workflow asks
:func:`check_model` when it is read: the model is built with random weights, its groups are
derived, a random permutation of them is checked to leave its function unchanged, and each
layer is cut. What fails is a sentence naming the node and why, which the workflow logs as the
reason the stages (or a layer's stitching) are skipped; nothing crashes a job later.

The answer is cached under ``.snakemake/convergent/`` like the layer plan
(:mod:`convergent.layer_plan`), keyed by everything it depends on, so only the first reading of a
changed configuration pays for building the model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from convergent.architectures import LayerSpec, dataset_geometry, layer_specs, model_source
from convergent.layer_plan import CACHE_DIR, plan_key
from convergent.outputs import atomic_output

# Library files whose code decides what check_model answers.
_CHECK_CODE = ("functional_plan.py", "permutation.py", "network_graph.py")
# A permuted network's largest |Δ logit| relative to its largest |logit| that still counts as the
# same function: float32 sums in another order differ by ~1e-6 on the zoo.
FUNCTION_TOLERANCE = 1e-4


def check_model(model, example, layers: list[LayerSpec]) -> dict:
    """What the functional stages can do with ``model`` (torch ``nn.Module``, random weights are
    enough) on input batch ``example`` (at least two inputs) at ``layers``.

    Returns ``{"reason": None or why connectivity and stitching cannot run, "groups": number of
    permutation groups, "stitch": {layer name: None or why it cannot be stitched}}``.

    >>> import torch, torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> answer = check_model(net, torch.randn(2, 3, 32, 32), [LayerSpec("layer2.1", "layer2.1"),
    ...                                                       LayerSpec("conv", "layer2.1.conv1")])
    >>> answer["reason"], answer["groups"], answer["stitch"]["layer2.1"]
    (None, 12, None)
    >>> answer["stitch"]["conv"]
    "cannot cut the network at 'layer2.1.conv1': node 'layer2.1.add' after the cut uses 'layer2.0.relu_1' from before it (a connection that skips the cut)"
    """
    import torch

    from convergent.network_graph import layer_node, output_shapes, split, trace
    from convergent.permutation import derive_spec, permuted

    model = model.eval()
    try:
        spec = derive_spec(model, example)
    except ValueError as error:
        return {"reason": str(error), "groups": 0, "stitch": {}}
    except Exception as error:  # noqa: BLE001 (a forward pass that fails: the stages are skipped, not the run)
        return {"reason": f"the model's graph could not be followed ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''})", "groups": 0, "stitch": {}}
    if not spec.groups:
        return {"reason": "the model has no permutable channels (every channel space is fixed: "
                          f"{spec.fixed or 'inputs and outputs only'})", "groups": 0, "stitch": {}}
    with torch.no_grad():
        reference = model(example)
        other = permuted(model, spec, spec.random(seed=0)).eval()(example)
    if not isinstance(reference, torch.Tensor):
        return {"reason": f"the model returns a {type(reference).__name__}, not a tensor of logits", "groups": 0,
                "stitch": {}}
    worst = float((other - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
    if not worst <= FUNCTION_TOLERANCE:
        return {"reason": f"the derived permutation groups change the network's function (max |Δ logit| / "
                          f"max |logit| = {worst:.1e} for a random permutation): some op mixes channels in a "
                          "way the derivation does not see", "groups": 0, "stitch": {}}
    graph = trace(model)
    shapes = output_shapes(graph, example)
    stitch = {}
    for layer in layers:
        stitch[layer.name] = _stitch_reason(graph, model, layer, shapes, layer_node, split)
    return {"reason": None, "groups": len(spec.groups), "stitch": stitch}


def _stitch_reason(graph, model, layer: LayerSpec, shapes: dict, layer_node, split) -> str | None:
    if layer.output:
        return f"its output is selected from a tuple or dict ({list(layer.output)}); a cut needs one tensor"
    if layer.layout not in (None, "", "NCHW", "NC"):
        return f"layout {layer.layout}: the stitching layer reads channels on axis 1"
    try:
        node = layer_node(graph, model, layer.name, layer.target)
        split(graph, node)
    except (KeyError, ValueError) as error:
        return str(error).strip("'\"")
    shape = shapes.get(node)
    if shape is None or len(shape) not in (2, 4):
        return (f"its output has shape {list(shape) if shape else 'unknown'}; stitching layers exist for "
                "[N, C, H, W] maps (1x1 conv + batch norm) and [N, C] vectors (linear)")
    return None


def _key(config: dict, layers: list[str], workdir) -> str:
    here = Path(__file__).parent
    code = hashlib.sha256(b"".join((here / name).read_bytes() for name in _CHECK_CODE)).hexdigest()
    base = plan_key(config["model"], config["dataset"], workdir)
    return hashlib.sha256(json.dumps([base, code, layers]).encode()).hexdigest()[:20]


def plan_functional(config: dict, layers: list[str], workdir: str | os.PathLike = ".") -> dict:
    """:func:`check_model` for a validated config whose probed layers are ``layers``: for the zoo
    without building anything (every architecture is supported, at every probe point), for other
    sources from the model built with random weights (cached). Language models: not supported."""
    model_cfg = config["model"]
    source, _ = model_source(model_cfg)
    if source == "architecture":
        return {"reason": None, "groups": None, "stitch": {layer: None for layer in layers}}
    if source == "huggingface" or config["dataset"]["name"] == "text":
        return {"reason": "language models: interpolation and stitching are image-classifier tests", "groups": 0,
                "stitch": {}}
    cache = Path(workdir) / CACHE_DIR / f"functional-{_key(config, layers, workdir)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    import torch

    from convergent.models import expected_channels, load_model

    specs = {s.name: s for s in (layer_specs(model_cfg) or [])}
    channels, classes, size = dataset_geometry(config["dataset"])
    loaded = load_model(model_cfg, (channels, classes if classes is not None else 10, size), seed=0,
                        pretrained=False, workdir=workdir)
    # fx traces forward() without the grey-to-RGB pre-hook: give the model the channels it expects
    example = torch.randn(2, expected_channels(loaded.module) or channels, size, size,
                          generator=torch.Generator().manual_seed(0))
    answer = check_model(loaded.module, example, [specs.get(name, LayerSpec(name, name)) for name in layers])
    with atomic_output(cache) as tmp:
        tmp.write_text(json.dumps(answer, indent=1))
    return answer

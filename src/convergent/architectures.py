"""What the workflow must know about a model before any job runs, without importing torch.

Reading the workflow (which needs the layer names to plan jobs) happens at every Snakemake start
and in every cluster job, so this module stays free of torch:

* the built-in zoo's probe-able layers (:func:`probe_layer_names`, :func:`select_layers`);
* which source the ``model`` config section names (:func:`model_source`): the zoo
  (``architecture``), a ``torchvision`` builder, a ``timm`` model or a ``factory``;
* the configured layers as :class:`LayerSpec` (:func:`layer_specs`);
* the input geometry (channels, classes, side) a dataset gives a model (:func:`dataset_geometry`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ARCHITECTURES = ("small_cnn", "resnet18", "resnet34", "vgg16", "caffenet")

_RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
_VGG16_STAGES = (2, 2, 3, 3, 3)

# The keys of the `model` section that name where the network comes from; exactly one is given.
SOURCES = ("architecture", "torchvision", "timm", "factory", "huggingface")
# Tensor layouts a layer may declare (`layout:`); N is the batch, C the units.
LAYOUTS = ("NCHW", "NHWC", "NTC", "NCT", "NC")
LAYER_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")

# (channels, classes, side) of the datasets whose geometry is fixed.
DATASET_GEOMETRY = {
    "mnist5k": (1, 10, 28),
    "mnist": (1, 10, 28),
    "fashion_mnist": (1, 10, 28),
    "cifar10": (3, 10, 32),
    "cifar100": (3, 100, 32),
}


def probe_layer_names(architecture: str) -> list[str]:
    """The probe-able layers of a zoo architecture, input to output, without building it."""
    if architecture == "small_cnn":
        return ["conv1", "conv2", "conv3", "conv4", "fc1"]
    if architecture in _RESNET_BLOCKS:
        blocks = [
            f"layer{stage + 1}.{block}"
            for stage, count in enumerate(_RESNET_BLOCKS[architecture])
            for block in range(count)
        ]
        return ["conv1", *blocks, "avgpool"]
    if architecture == "vgg16":
        convs = [f"conv{s + 1}_{i + 1}" for s, n in enumerate(_VGG16_STAGES) for i in range(n)]
        return [*convs, "fc6", "fc7"]
    if architecture == "caffenet":
        return ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    raise ValueError(f"config key 'model.architecture': unknown architecture {architecture!r}; allowed: {ARCHITECTURES}")


def select_layers(architecture: str, layers: list[str] | None) -> list[str]:
    """The configured probe layers of a zoo architecture, validated, in network order."""
    available = probe_layer_names(architecture)
    if layers is None:
        return available
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise ValueError(
            f"config key 'model.layers': {unknown} are not layers of {architecture}; allowed: {available}"
        )
    return [name for name in available if name in layers]


def model_source(model_cfg: dict) -> tuple[str, str]:
    """``(source, name)`` of the ``model`` section: ``("architecture", "small_cnn")``,
    ``("torchvision", "resnet50")``, ``("timm", "convnext_tiny")``, ``("factory", "nets.py:build")``,
    ``("huggingface", "google/multiberts-seed_0")``."""
    given = [key for key in SOURCES if model_cfg.get(key) is not None]
    if len(given) != 1:
        raise ValueError(f"config key 'model': give exactly one of {list(SOURCES)} (got {given or 'none'})")
    return given[0], str(model_cfg[given[0]])


def describe_source(model_cfg: dict) -> str:
    """A short name for tables and file attributes: ``small_cnn``, ``torchvision:resnet50``."""
    source, name = model_source(model_cfg)
    return name if source == "architecture" else f"{source}:{name}"


def source_config(model_cfg: dict) -> dict:
    """The part of the ``model`` section that decides the network's weights (not what is probed):
    the params of the rules that train, import or initialise networks, so that editing the layers
    reruns extraction but never training."""
    return {k: v for k, v in model_cfg.items() if k != "layers"}


@dataclass(frozen=True)
class LayerSpec:
    """One configured layer: ``name`` (in files and figures), ``target`` (a module or FX node
    name), ``output`` (selector path into a tuple/dict/ModelOutput), ``layout`` (declared or None)."""

    name: str
    target: str
    output: tuple = ()
    layout: str | None = None


def layer_specs(model_cfg: dict) -> list[LayerSpec] | None:
    """The ``model.layers`` entries as :class:`LayerSpec` (None: the source's default layers).

    An entry is a name (``layer3.5``, ``add_2``) or a mapping ``{layer, output, name, layout}``:
    ``output`` selects from a tuple/dict output (an index, a key, or a list of them); ``name``
    (default ``<layer>.<output>``) is the name used in file paths.
    """
    entries = model_cfg.get("layers")
    if entries is None:
        return None
    specs = []
    for entry in entries:
        if isinstance(entry, str):
            spec = LayerSpec(entry, entry)
        else:
            output = entry.get("output")
            path = () if output is None else tuple(output) if isinstance(output, list) else (output,)
            name = entry.get("name") or ".".join([entry["layer"], *map(str, path)])
            spec = LayerSpec(name, entry["layer"], path, entry.get("layout"))
        if not LAYER_NAME.match(spec.name):
            raise ValueError(f"config key 'model.layers': {spec.name!r} cannot name files; give the entry "
                             "a `name:` of letters, digits, '_', '.' and '-'")
        specs.append(spec)
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"config key 'model.layers': {duplicates} listed more than once")
    return specs


def factory_file(model_cfg: dict, workdir: str | os.PathLike = ".") -> Path | None:
    """The Python file a factory is defined in, so that rules can list it as an input (editing it
    reruns them): ``path/to/file.py`` as given, or the file of ``package.module`` when that package
    lives in ``workdir``; None for other sources and for installed packages (versioned like any
    dependency). Found without importing anything."""
    if model_cfg.get("factory") is None:
        return None
    target = str(model_cfg["factory"]).rpartition(":")[0]
    if target.endswith(".py"):
        return Path(target)
    parts = target.split(".")
    for candidate in (Path(*parts).with_suffix(".py"), Path(*parts) / "__init__.py"):
        if (Path(workdir) / candidate).is_file():
            return candidate
    return None


def dataset_geometry(dataset_cfg: dict) -> tuple[int, int | None, int]:
    """``(channels, classes, side)`` of the images a dataset feeds a model; ``classes`` is None for
    an image folder whose class folders are not there (yet)."""
    name = dataset_cfg["name"]
    if name in DATASET_GEOMETRY:
        return DATASET_GEOMETRY[name]
    if name == "imagefolder":
        root = Path(str(dataset_cfg.get("root", "data")))
        classes = None
        for split in ("train", "val"):
            if (root / split).is_dir():
                classes = sum(1 for entry in os.scandir(root / split) if entry.is_dir())
                break
        return 3, classes, int(dataset_cfg.get("image_size", 224))
    if name == "text":  # token ids, no channels or classes; the "side" is the padded length
        return 0, None, int(dataset_cfg.get("max_length", 128))
    raise ValueError(f"config key 'dataset.name': unknown dataset {name!r}")

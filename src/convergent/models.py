"""Every network the pipeline looks at comes from here: one entry point, :func:`load_model`.

Sources (the ``model`` config section names one): the built-in zoo (``architecture``), any
``torchvision`` builder, any ``timm`` model, or a user ``factory`` (see :mod:`convergent.sources`).
:func:`load_model` builds the network (seeded), gives it a checkpoint's weights if asked, makes
grey images acceptable to a model whose first layer expects more channels, and resolves the
configured layers into probes (:mod:`convergent.probing`). Training, extraction, the functional
stages and ``convergent layers`` all go through it.

The zoo: every zoo model carries ``probe_points``, an ordered map from a layer's name (``conv1``,
``layer2.1``, ``fc6``) to the module whose output is that layer's post-ReLU activation.

* ``small_cnn``: 4 conv + 2 fc layers with ReLU, for the embedded default (28x28 digits).
* ``resnet18`` / ``resnet34``: torchvision's ResNets with the CIFAR stem (3x3 conv, stride 1, no
  max-pool). Probed: the stem and every residual block's output (post-ReLU), then ``avgpool``.
* ``vgg16``: torchvision's VGG-16. On small inputs (<= 64 px, CIFAR) the batch-norm variant with a
  512-512 classifier, as usual for CIFAR; otherwise torchvision's ImageNet definition.
* ``caffenet``: AlexNet as in Li et al. 2016 §2 (CaffeNet): no channel groups, local response
  normalisation after pooling.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from convergent.architectures import (  # noqa: F401 (re-exported)
    _RESNET_BLOCKS, ARCHITECTURES, LayerSpec, describe_source, layer_specs, model_source, probe_layer_names,
    select_layers, source_config)
from convergent.checkpoints import CHECKPOINT_FORMAT, CheckpointError, fit_state_dict, load_payload, read_state_dict
from convergent.probing import Probe, probe_batch, resolve_probes

class SmallCNN(nn.Module):
    """4 conv + 2 fc layers with ReLU; small enough to train in a minute on a laptop CPU."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 widths: tuple[int, int, int, int] = (16, 32, 32, 64), hidden: int = 128):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, c1, 3, padding=1)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(c1, c2, 3, padding=1)), ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
            ("conv3", nn.Conv2d(c2, c3, 3, padding=1)), ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(c3, c4, 3, padding=1)), ("relu4", nn.ReLU()),
            ("pool4", nn.MaxPool2d(2)),
        ]))
        side = image_size // 4
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(c4 * side * side, hidden)), ("relu5", nn.ReLU()),
            ("fc2", nn.Linear(hidden, num_classes)),
        ]))
        self.probe_points = OrderedDict([
            ("conv1", "features.relu1"), ("conv2", "features.relu2"),
            ("conv3", "features.relu3"), ("conv4", "features.relu4"), ("fc1", "classifier.relu5"),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class CaffeNet(nn.Module):
    """AlexNet as trained by Li et al. (2016, §2): no channel groups, LRN after pooling."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, image_size: int = 227):
        super().__init__()

        def lrn():
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 96, 11, stride=4)), ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(3, 2)), ("norm1", lrn()),
            ("conv2", nn.Conv2d(96, 256, 5, padding=2)), ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(3, 2)), ("norm2", lrn()),
            ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(384, 384, 3, padding=1)), ("relu4", nn.ReLU()),
            ("conv5", nn.Conv2d(384, 256, 3, padding=1)), ("relu5", nn.ReLU()),
            ("pool5", nn.MaxPool2d(3, 2)),
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout()),
            ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout()),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        self.probe_points = OrderedDict(
            [(f"conv{i}", f"features.relu{i}") for i in range(1, 6)]
            + [("fc6", "classifier.relu6"), ("fc7", "classifier.relu7")]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class _Probe(nn.Module):
    """An identity marking a post-ReLU point, so each probed layer has a module of its own.

    torchvision's BasicBlock applies one ReLU module twice, so hooking it would fire twice.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _ProbedBlock(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.out = _Probe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(x))


def _cifar_resnet(architecture: str, in_channels: int, num_classes: int) -> nn.Module:
    # imported here, not at the top: torchvision costs seconds in every job that imports this module
    from torchvision import models as tv_models

    net = getattr(tv_models, architecture)(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.relu = nn.Sequential(OrderedDict([("relu", nn.ReLU()), ("out", _Probe())]))
    points = OrderedDict([("conv1", "relu.out")])
    for stage in range(1, 5):
        layer = getattr(net, f"layer{stage}")
        for i in range(len(layer)):
            layer[i] = _ProbedBlock(layer[i])
            points[f"layer{stage}.{i}"] = f"layer{stage}.{i}.out"
    net.avgpool = nn.Sequential(OrderedDict([("pool", nn.AdaptiveAvgPool2d(1)), ("out", _Probe())]))
    points["avgpool"] = "avgpool.out"
    net.probe_points = points
    return net


def _vgg16(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    from torchvision import models as tv_models

    small = image_size <= 64
    net = (tv_models.vgg16_bn if small else tv_models.vgg16)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        net.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    if small:
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(),
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(),
            nn.Linear(512, num_classes),
        )
    names = probe_layer_names("vgg16")
    relus = [f"features.{i}" for i, m in enumerate(net.features) if isinstance(m, nn.ReLU)]
    relus += [f"classifier.{i}" for i, m in enumerate(net.classifier) if isinstance(m, nn.ReLU)]
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # a hooked in-place output could be overwritten downstream
    net.probe_points = OrderedDict(zip(names, relus, strict=True))
    return net


def build_model(architecture: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """A freshly initialised model (initialise the RNG first for a reproducible one)."""
    if architecture == "small_cnn":
        net = SmallCNN(in_channels, num_classes, image_size)
    elif architecture in _RESNET_BLOCKS:
        net = _cifar_resnet(architecture, in_channels, num_classes)
    elif architecture == "vgg16":
        net = _vgg16(in_channels, num_classes, image_size)
    elif architecture == "caffenet":
        net = CaffeNet(in_channels, num_classes, image_size)
    else:
        probe_layer_names(architecture)  # raises with the allowed names
    assert list(net.probe_points) == probe_layer_names(architecture)
    return net


def expected_channels(module: nn.Module) -> int | None:
    """Input channels of the model's first convolution (None for a model without one)."""
    first = next((m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return None if first is None else int(first.in_channels)


def channel_adapter(data_channels: int, model_channels: int | None):
    """``x -> x`` with grey images repeated to the channels the model expects (None: no change)."""
    if model_channels is None or model_channels == data_channels:
        return None
    if data_channels != 1:
        raise ValueError(f"the model's first layer expects {model_channels} input channels and the dataset gives "
                         f"{data_channels}; only grey (1-channel) images are adapted (repeated)")

    def adapt(x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, model_channels, -1, -1) if x.ndim == 4 and x.shape[1] == 1 else x

    return adapt


@dataclass
class LoadedModel:
    """A network and how to read its layers: ``module``, ``probes`` (layer name -> :class:`Probe`,
    when asked for), ``prepare`` (adapts a batch to the model) and where it came from."""

    module: nn.Module
    model_cfg: dict
    geometry: tuple[int, int, int]
    prepare: object = None
    probes: dict[str, Probe] | None = None
    record: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return describe_source(self.model_cfg)


def build_network(model_cfg: dict, geometry: tuple[int, int | None, int], pretrained: bool = True,
                  workdir: str | os.PathLike = ".") -> nn.Module:
    """The network a ``model`` section names, freshly built (seed the RNG first)."""
    from convergent import sources

    channels, classes, size = geometry
    source, name = model_source(model_cfg)
    kwargs = model_cfg.get("kwargs") or {}
    weights = model_cfg.get("weights") if pretrained else None
    if source == "architecture":
        if kwargs or model_cfg.get("weights") is not None:
            raise ValueError("config keys 'model.kwargs' and 'model.weights' are for torchvision, timm and factory "
                             "models; the zoo's architectures take neither")
        return build_model(name, channels, classes if classes is not None else 1000, size)
    if source == "torchvision":
        return sources.build_torchvision(name, kwargs, classes, weights)
    if source == "timm":
        return sources.build_timm(name, kwargs, classes, weights)
    if source == "huggingface":
        if model_cfg.get("weights") is not None:
            raise ValueError("config key 'model.weights': a Hugging Face model's weights come from `checkpoints:` "
                             "(a hub id or directory per seed)")
        from convergent import huggingface

        return huggingface.build(model_cfg, pretrained_from=model_cfg["huggingface"] if pretrained else None)
    if weights is not None:
        raise ValueError("config key 'model.weights': a factory loads its own weights (or give `checkpoints:`)")
    return sources.build_factory(name, kwargs, classes, workdir)


def text_probe_batch(n: int = 3, length: int = 8) -> dict:
    """Token ids for checking a language model's probes (ids 1.., every position a real token)."""
    ids = (torch.arange(n * length).reshape(n, length) % 50) + 1
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _is_huggingface_checkpoint(checkpoint) -> bool:
    """A hub id or ``save_pretrained`` directory (not a convergent or state_dict file)."""
    from pathlib import Path

    path = Path(str(checkpoint))
    return path.is_dir() or not (path.is_file() or path.suffix in (".pt", ".pth", ".safetensors", ".bin"))


def _load_huggingface(model_cfg: dict, seed, pretrained: bool, checkpoint, checkpoint_key, probes: bool,
                      probe_inputs) -> LoadedModel:
    """:func:`load_model` for ``model.huggingface``: weights from a hub id / directory (importing a
    seed), a convergent checkpoint (rebuilt from the configuration saved in it), or none (random)."""
    from convergent import huggingface

    if seed is not None:
        torch.manual_seed(seed)
    record = {}
    if checkpoint is not None and _is_huggingface_checkpoint(checkpoint):
        module = huggingface.build(model_cfg, pretrained_from=str(checkpoint))
    elif checkpoint is not None:
        payload = load_payload(checkpoint)
        if not (isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT):
            raise CheckpointError(f"checkpoint {checkpoint}: a Hugging Face model's seed is a hub id or a "
                                  "save_pretrained directory (config key 'checkpoints')")
        module = huggingface.build(model_cfg, config_dict=payload.get("hf_config"))
        fit_state_dict(module, payload["state_dict"], str(checkpoint), f"model '{describe_source(model_cfg)}'")
        record = payload
    else:
        module = huggingface.build(model_cfg, pretrained_from=model_cfg["huggingface"] if pretrained else None)
    module.eval()
    loaded = LoadedModel(module, source_config(model_cfg), (0, None, 0), None, record=record)
    if probes:
        specs = huggingface.layer_specs(layer_specs(model_cfg), huggingface.num_hidden_layers(module))
        batch = probe_inputs if probe_inputs is not None else text_probe_batch()
        probes = resolve_probes(module, specs, batch, None, mode="hooks")
        # Hidden states are read from the model's output, after every module: keep the configured order.
        loaded.probes = {s.name: probes[s.name] for s in specs if s.name in probes}
    return loaded


def load_model(model_cfg: dict, geometry: tuple[int, int | None, int], *, seed: int | None = None,
               pretrained: bool = True, checkpoint: str | os.PathLike | None = None, probes: bool = False,
               probe_inputs: torch.Tensor | None = None, workdir: str | os.PathLike = ".",
               checkpoint_key: str | None = None) -> LoadedModel:
    """The one way every stage gets a network.

    ``geometry`` is the dataset's (channels, classes, side). ``seed`` seeds the initial weights;
    ``pretrained=False`` skips configured pretrained weights (untrained baselines, rebuilding a
    checkpoint); ``checkpoint`` loads weights from a convergent checkpoint or any state_dict file
    (strictly, mismatches named; ``checkpoint_key`` names its config key in messages); ``probes``
    resolves ``model_cfg["layers"]`` (None: the default layers) on ``probe_inputs`` (default: a
    small random batch).
    """
    if model_source(model_cfg)[0] == "huggingface":
        return _load_huggingface(model_cfg, seed, pretrained, checkpoint, checkpoint_key, probes, probe_inputs)
    if seed is not None:
        torch.manual_seed(seed)
    module = build_network(model_cfg, geometry, pretrained=pretrained and checkpoint is None, workdir=workdir)
    adapt = channel_adapter(geometry[0], expected_channels(module))
    if adapt is not None:
        module.register_forward_pre_hook(lambda _m, args: (adapt(args[0]), *args[1:]))
    record = {}
    if checkpoint is not None:
        payload = load_payload(checkpoint)
        state = payload["state_dict"] if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT \
            else read_state_dict(checkpoint)
        record = payload if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT else {}
        where = f"{checkpoint}" + (f" (config key '{checkpoint_key}')" if checkpoint_key else "")
        what = (f"architecture '{model_source(model_cfg)[1]}'" if model_source(model_cfg)[0] == "architecture"
                else f"model '{describe_source(model_cfg)}'")
        fit_state_dict(module, state, where, what)
    module.eval()
    loaded = LoadedModel(module, source_config(model_cfg), tuple(geometry), adapt, record=record)
    if probes:
        batch = probe_inputs if probe_inputs is not None else probe_batch(geometry[0], geometry[2])
        loaded.probes = resolve_probes(module, layer_specs(model_cfg), batch, adapt)
    return loaded


def plan_probes(model_cfg: dict, geometry: tuple[int, int | None, int],
                workdir: str | os.PathLike = ".") -> dict[str, Probe]:
    """The configured layers of a model, resolved without its weights (see :mod:`convergent.layer_plan`).

    Built on the ``meta`` device (shapes without memory) where the model allows, else on the CPU.
    """
    from convergent import sources
    from convergent.probing import ProbeError

    channels, classes, size = geometry
    geometry = (channels, classes if classes is not None else 1000, size)
    source, name = model_source(model_cfg)
    if source == "torchvision" and model_cfg.get("weights") is not None:
        sources.torchvision_weights(name, model_cfg["weights"])  # a wrong weights name fails here, not in a job
    if source == "huggingface":  # built for real: attention masks are computed from values
        return load_model(model_cfg, geometry, pretrained=False, probes=True).probes
    if source == "timm" and model_cfg.get("weights") not in (None, "DEFAULT"):
        raise sources.ModelSourceError(f"config key 'model.weights': timm models take weights: DEFAULT, "
                                       f"got {model_cfg['weights']!r}")
    try:
        with torch.device("meta"):
            loaded = load_model(model_cfg, geometry, pretrained=False, workdir=workdir)
            batch = torch.zeros(3, channels, size, size)
            return resolve_probes(loaded.module, layer_specs(model_cfg), batch, loaded.prepare)
    except (ProbeError, sources.ModelSourceError):
        raise
    except Exception:  # noqa: BLE001 (an op without a meta kernel: do it for real)
        loaded = load_model(model_cfg, geometry, pretrained=False, probes=True, workdir=workdir)
        return loaded.probes


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """A model and its checkpoint record (architecture, seed, metrics) from a convergent checkpoint."""
    payload = load_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a convergent checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    model_cfg = payload.get("model") or {"architecture": payload["architecture"]}
    geometry = (payload["in_channels"], payload["num_classes"], payload["image_size"])
    loaded = load_model(model_cfg, geometry, pretrained=False)
    fit_state_dict(loaded.module, payload["state_dict"], str(path), f"model '{describe_source(model_cfg)}'")
    return loaded.module.eval(), payload


def receptive_field(model: nn.Module, layer: str, in_channels: int, image_size: int) -> tuple[int, int, int]:
    """``(size, stride, offset)`` of one layer's units (see :mod:`convergent.receptive_fields`)."""
    from convergent.receptive_fields import receptive_fields

    probes = resolve_probes(model, [LayerSpec(layer, layer)], probe_batch(in_channels, image_size))
    return receptive_fields(model, probes, in_channels, image_size)[layer]

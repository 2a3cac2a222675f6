"""The model zoo, and the layers of each model that can be probed.

Every model is a plain ``torch.nn.Module`` with an attribute ``probe_points``: an ordered map from
a layer's name (as used in file paths and figures: ``conv1``, ``layer2.1``, ``fc6``) to the
module whose output is that layer's post-ReLU activation.

* ``small_cnn``: 4 conv + 2 fc layers with ReLU, for the embedded default (28x28 digits).
* ``resnet18`` / ``resnet34``: torchvision's ResNets with the CIFAR stem (3x3 conv, stride 1, no
  max-pool). Probed: the stem and every residual block's output (post-ReLU), then ``avgpool``.
* ``vgg16``: torchvision's VGG-16. On small inputs (<= 64 px, CIFAR) the batch-norm variant with a
  512-512 classifier, as usual for CIFAR; otherwise torchvision's ImageNet definition.
* ``caffenet``: AlexNet as in Li et al. 2016 §2 (CaffeNet): no channel groups, local response
  normalisation after pooling.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn
from torchvision import models as tv_models

from convergent.architectures import (  # noqa: F401 (re-exported)
    _RESNET_BLOCKS, ARCHITECTURES, probe_layer_names, select_layers)

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


class _StopForward(Exception):
    pass


@torch.enable_grad()  # callers may be inside torch.no_grad()
def receptive_field(model: nn.Module, layer: str, in_channels: int, image_size: int) -> tuple[int, int, int]:
    """``(size, stride, offset)`` of a conv layer's units: position (y, x) of the layer sees input
    rows ``y*stride + offset ... + size - 1`` (same for columns; may extend past the image).

    Computed, for any architecture, from the support of the gradient of one output position
    with respect to the input, on a copy of the model made all-positive (so nothing cancels) and
    on an input canvas large enough that the field is not clipped by the border. Branching
    architectures (ResNets) make composing kernel sizes by hand error-prone; the gradient is exact.
    """
    probe = copy.deepcopy(model).double().eval()
    for parent in list(probe.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):  # max routes the gradient to one input only
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                   child.ceil_mode))
            elif isinstance(child, nn.LocalResponseNorm):
                setattr(parent, name, nn.Identity())
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0), module.bias.zero_()
                module.running_mean.zero_(), module.running_var.fill_(1.0)
    target = dict(probe.named_modules())[probe.probe_points[layer]]
    captured = {}

    def hook(_module, _inputs, output):
        captured["out"] = output
        raise _StopForward

    handle = target.register_forward_hook(hook)
    try:
        try:
            probe(torch.ones(1, in_channels, image_size, image_size, dtype=torch.float64))
        except _StopForward:
            pass
        if captured["out"].ndim != 4 or captured["out"].shape[2:] == (1, 1):  # fc or global pool
            return image_size, 0, 0
        canvas = 2 * image_size + 64
        for _ in range(5):
            x = torch.ones(1, in_channels, canvas, canvas, dtype=torch.float64, requires_grad=True)
            try:
                probe(x)
            except _StopForward:
                pass
            out = captured["out"]
            h = out.shape[2]
            centre = h // 2
            boxes = []
            for y in (centre, centre + 1):
                grad, = torch.autograd.grad(out[0, :, y, centre].sum(), x, retain_graph=True)
                rows = torch.nonzero(grad[0].abs().sum(0).sum(1)).flatten()
                boxes.append((int(rows.min()), int(rows.max())))
            touches = boxes[0][0] == 0 or boxes[1][1] == canvas - 1
            if not touches:
                break
            canvas *= 2
        else:
            raise RuntimeError(f"receptive field of {layer} does not fit in a {canvas}px canvas")
    finally:
        handle.remove()
    size = boxes[0][1] - boxes[0][0] + 1
    stride = boxes[1][0] - boxes[0][0]
    return size, stride, boxes[0][0] - centre * stride

"""Receptive fields of any network's map units, computed numerically.

A unit at map position ``(y, x)`` sees input rows ``y*stride + offset ... + size - 1`` (and the same
columns; the window may extend past the image). Composing kernel sizes by hand is error-prone for
branching networks and impossible for models nobody described; the gradient is exact: the field
is the input region where the gradient of one output position is non-zero.

To keep anything from cancelling, the gradient is taken on a copy of the model whose weights are
all positive (random, scaled by fan-in), whose batch norms are identities, whose max-pools are
average pools (a max routes its gradient to one input only) and without local response
normalisation, on a positive random input; the canvas is enlarged until the field is not
clipped by its border. Where a unit's field is the whole canvas at two sizes (attention, global
context), or the model accepts no other input size and the field reaches the image border, the
unit sees the whole image: ``(image_size, 0, 0)``, as for vectors and token sequences, and the
patch figures then show the whole image with the unit's position marked.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from convergent.probing import Probe, ProbeRunner

WHOLE = "whole"


def whole_image(image_size: int) -> tuple[int, int, int]:
    return (int(image_size), 0, 0)


def _positive_copy(module: nn.Module) -> nn.Module:
    probe = copy.deepcopy(module).double().eval()
    for parent in list(probe.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(parent, name, nn.AdaptiveAvgPool2d(child.output_size))
            elif isinstance(child, nn.LocalResponseNorm):
                setattr(parent, name, nn.Identity())
    generator = torch.Generator().manual_seed(0)

    def positive(like: torch.Tensor) -> torch.Tensor:
        return 0.5 + torch.rand(like.shape, generator=generator, dtype=torch.float64)

    with torch.no_grad():
        for module_ in probe.modules():
            if isinstance(module_, (nn.modules.conv._ConvNd, nn.Linear)):
                module_.weight.copy_(positive(module_.weight) / module_.weight[0].numel())
                if module_.bias is not None:
                    module_.bias.zero_()
            elif isinstance(module_, nn.modules.batchnorm._BatchNorm):
                if module_.affine:
                    module_.weight.fill_(1.0), module_.bias.zero_()
                if module_.running_mean is not None:
                    module_.running_mean.zero_(), module_.running_var.fill_(1.0)
            elif isinstance(module_, (nn.LayerNorm, nn.GroupNorm)) and module_.weight is not None:
                module_.weight.copy_(positive(module_.weight))
                module_.bias.zero_()
    return probe


@torch.enable_grad()  # callers may be inside torch.no_grad()
def receptive_fields(module: nn.Module, probes: dict[str, Probe], in_channels: int, image_size: int,
                     prepare=None, max_doublings: int = 4) -> dict[str, tuple[int, int, int]]:
    """``(size, stride, offset)`` of every probe's units; the whole image for vectors, tokens and
    maps whose units see the whole input (see the module docstring)."""
    fields = {name: whole_image(image_size) for name, p in probes.items() if p.kind != "spatial"}
    pending = {name: p for name, p in probes.items() if p.kind == "spatial"}
    if not pending:
        return fields
    positive = _positive_copy(module)
    generator = torch.Generator().manual_seed(1)
    canvas, native_only = 2 * image_size + 64, False
    covered: set[str] = set()
    with ProbeRunner(positive, pending, prepare, grad=True) as runner:
        for _attempt in range(max_doublings + 1):
            x = (0.5 + torch.rand(1, in_channels, canvas, canvas, generator=generator, dtype=torch.float64))
            x.requires_grad_(True)
            try:
                outputs = runner(x)
            except Exception:  # noqa: BLE001 (a model fixed to one input size: measure on the image itself)
                if native_only or canvas == image_size:
                    raise
                canvas, native_only = image_size, True
                x = (0.5 + torch.rand(1, in_channels, canvas, canvas, generator=generator, dtype=torch.float64))
                x.requires_grad_(True)
                outputs = runner(x)
            for name in list(pending):
                result = _field(outputs[name], x, canvas, generator)
                # A field covering the whole canvas may be a large local one: global only if it
                # still does on the doubled canvas (or when no other size can be tried).
                if (result is WHOLE and (native_only or name in covered)) or (native_only and result is None):
                    fields[name] = whole_image(image_size)
                elif result is WHOLE:
                    covered.add(name)
                    continue
                elif result is not None:
                    fields[name] = result
                else:
                    continue
                del pending[name]
            if not pending:
                break
            if native_only:
                break
            canvas *= 2
    for name in pending:  # still clipped at the largest canvas: it sees at least the whole image
        fields[name] = whole_image(image_size)
    return {name: fields[name] for name in probes}


def _field(out: torch.Tensor, x: torch.Tensor, canvas: int, generator):
    """The field from the gradients at the map's centre and the position below it; None if the
    field is clipped by the canvas, :data:`WHOLE` if it is the whole canvas."""
    if out.ndim != 4:
        return WHOLE
    height, width = out.shape[2], out.shape[3]
    centre, column = (height - 1) // 2, (width - 1) // 2  # centre and centre + 1 stay off the border
    if centre + 1 >= height:
        return WHOLE
    weights = 0.5 + torch.rand(out.shape[1], generator=generator, dtype=out.dtype)
    boxes = []
    for y in (centre, centre + 1):
        grad, = torch.autograd.grad((out[0, :, y, column] * weights).sum(), x, retain_graph=True)
        rows = torch.nonzero(grad[0].abs().sum(0).sum(1)).flatten()
        if rows.numel() == 0:
            return WHOLE  # nothing reaches this position from the input: no local field to show
        boxes.append((int(rows.min()), int(rows.max())))
    if boxes[0][0] == 0 and boxes[0][1] == canvas - 1:
        return WHOLE
    if boxes[0][0] == 0 or boxes[1][1] == canvas - 1:
        return None
    size = boxes[0][1] - boxes[0][0] + 1
    stride = boxes[1][0] - boxes[0][0]
    return size, stride, boxes[0][0] - centre * stride

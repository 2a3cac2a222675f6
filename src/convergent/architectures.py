"""Which layers each architecture exposes for probing, known without building the model.

Kept free of torch so that reading the workflow (which needs the layer names to plan jobs) does
not pay for importing it: every Snakemake start, and every cluster job, parses the workflow.
"""

from __future__ import annotations

ARCHITECTURES = ("small_cnn", "resnet18", "resnet34", "vgg16", "caffenet")

_RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
_VGG16_STAGES = (2, 2, 3, 3, 3)


def probe_layer_names(architecture: str) -> list[str]:
    """The probe-able layers of an architecture, input to output, without building it."""
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
    """The configured probe layers, validated against the architecture, in network order."""
    available = probe_layer_names(architecture)
    if layers is None:
        return available
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise ValueError(
            f"config key 'model.layers': {unknown} are not layers of {architecture}; allowed: {available}"
        )
    return [name for name in available if name in layers]

"""Rules `figure_li2016_fig2` and `figure_li2016_fig4`: best and worst matched units, every layer.

Li et al. Fig. 2 (by correlation) and Fig. 4 (by mutual information): the k best and k worst
units of net a under the semi-matching (first seed pair), each shown next to its partner in net
b. Every unit is shown by the probe-image patches (its receptive field) where it fires most, or,
for units that see the whole image (attention, token sequences), the whole image with the unit's
position framed; for a layer right after the network's first convolution (its field is that
convolution's kernel) the filter weights come first, as images. One job draws every layer, so
the probe images are loaded once; one figure file per layer: ``{figure}_{layer}``. For probe text
the units are shown by their strongest token occurrences in context, and the same units go into
one table for the report (``tables/{figure}_tokens``).
"""

import matplotlib.pyplot as plt
import numpy as np
from torch import nn

from convergent.activations import layer_attrs, read_image_index, read_top_activations
from convergent.data import load_probe_images
from convergent.matching import extremes, frame_matches, read_match_csv
from convergent.patches import draw_patch_grid, filter_images, unit_patches
from convergent.plotting import outputs_named, save_figure
from convergent.training import load_checkpoint


def first_conv(model_path) -> nn.Conv2d | None:
    model, _ = load_checkpoint(model_path)
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def first_layer_filters(conv: nn.Conv2d | None, units: int, rf, channels: int) -> np.ndarray | None:
    """The first convolution's filters as images of the layer's field size, when the layer's units
    are that convolution's outputs (same count, and a field that is exactly one kernel, so at most
    element-wise operations lie between); else None. Grey probe images (``channels`` 1) fed to a
    colour model are repeated over its channels, so its effective filter is the channels' sum."""
    size, stride, _ = (int(v) for v in rf)
    if conv is None or conv.out_channels != units or conv.groups != 1:
        return None
    if (size, stride) != (conv.kernel_size[0], conv.stride[0]) or conv.kernel_size[0] != conv.kernel_size[1]:
        return None
    weight = conv.weight.detach().cpu().numpy()
    if channels == 1 and weight.shape[1] > 1:
        weight = weight.sum(axis=1, keepdims=True)
    images = filter_images(weight)
    # Nearest-neighbour resize so a filter occupies one patch cell of the grid.
    rows = np.arange(size) * images.shape[1] // size
    cols = np.arange(size) * images.shape[2] // size
    return images[:, rows][:, :, cols]


def unit_rows(units, partners, images, top_a, top_b, attrs, filters_a, filters_b) -> np.ndarray:
    """``[len(units), cols, s, s, C]``: (filter,) patches of the unit in a | blank | (filter,) partner's."""
    rows = []
    for u, p in zip(units, partners):
        left = unit_patches(images, top_a[u], attrs)
        right = unit_patches(images, top_b[p], attrs)
        blank = np.full((1, *left.shape[1:]), 255, dtype=np.uint8)
        if filters_a is not None:
            left = np.concatenate([filters_a[u][None], blank, left])
            right = np.concatenate([filters_b[p][None], blank, right])
        rows.append(np.concatenate([left, blank, blank, right]))
    return np.stack(rows)


def plot(images, inputs, matching, layer: str, cfg: dict, measure: str, pair, convs):
    a, b = pair
    semi, _ = frame_matches(read_match_csv(matching))
    best, worst = extremes(semi, cfg["top_k"])
    attrs = layer_attrs(inputs.act_a, layer)
    rf, units = attrs["receptive_field"], int(attrs["shape"][0])
    top_a = read_top_activations(inputs.act_a, layer)[:, : cfg["patches"]]
    top_b = read_top_activations(inputs.act_b, layer)[:, : cfg["patches"]]
    filters_a = first_layer_filters(convs[0], units, rf, images.shape[-1])
    filters_b = first_layer_filters(convs[1], units, rf, images.shape[-1])
    if filters_a is None or filters_b is None:
        filters_a = filters_b = None
    value_name = "r" if measure == "correlation" else "MI"
    grids = [unit_rows(chosen, semi.partner[chosen], images, top_a, top_b, attrs, filters_a, filters_b)
             for chosen in (best, worst)]
    # Height from the grid's aspect, so the patches fill the panels instead of leaving white bands.
    rows, cols = grids[0].shape[:2]
    fig, axes = plt.subplots(1, 2, figsize=(12, min(6 * rows / cols, 14) + 1.0), constrained_layout=True)
    for ax, grid, (label, chosen) in zip(axes, grids, (("best", best), ("worst", worst))):
        partners = semi.partner[chosen]
        labels = [f"{u}→{p}  {value_name} {v:.2f}" for u, p, v in zip(chosen, partners, semi.value[chosen])]
        draw_patch_grid(ax, grid, row_labels=labels,
                        title=f"{len(chosen)} {label} by {measure}: net {a} (left) | net {b} (right)")
    what = "filters, then " if filters_a is not None else ""
    field = (f"{int(rf[0])}px receptive field" if int(rf[1]) > 0
             else "whole images: the units see all of it; red frames mark the unit's position")
    fig.suptitle(f"{layer}: semi-matching by {measure}; each unit shown by {what}its {top_a.shape[1]} "
                 f"strongest probe patches ({field})", fontsize=9)
    return fig


def main_text(tokens, inputs, outputs, params):
    """Probe text: each unit by its strongest token occurrences in context (no patches, no filters),
    as a figure per layer and, for the report, one table of every layer's best and worst units."""
    import pandas as pd

    from convergent.tables import write_table
    from convergent.token_figures import plot_token_matches, token_match_table

    print("probe text: units are shown by their strongest tokens in context (the text analogue of "
          "the image patches; language models have no first-layer filters to show)")
    n_contexts, rows = min(3, params.cfg["patches"]), []
    for layer, matching in zip(params.layers, inputs.matching, strict=True):
        semi, _ = frame_matches(read_match_csv(matching))
        best, worst = extremes(semi, params.cfg["top_k"])
        top_a = read_top_activations(inputs.act_a, layer)
        top_b = read_top_activations(inputs.act_b, layer)
        fig = plot_token_matches(tokens, top_a, top_b, semi, best, worst, layer=layer, measure=params.measure,
                                 pair=params.pair, n_contexts=n_contexts)
        save_figure(fig, outputs_named(outputs, f"{params.figure}_{layer}"), dpi=params.figures["dpi"])
        for rank, chosen in (("best", best), ("worst", worst)):
            part = token_match_table(tokens, top_a, top_b, semi, chosen, n_contexts)
            part.insert(0, "rank", rank)
            part.insert(0, "layer", layer)
            rows.append(part)
    if getattr(outputs, "csv", None):
        a, b = params.pair
        table = pd.concat(rows, ignore_index=True).rename(columns={"net_a": f"seed{a}", "net_b": f"seed{b}"})
        value = "r" if params.measure == "correlation" else "MI (nats)"
        write_table(table, str(outputs.csv)[: -len(".csv")], float_format="{:.3f}",
                    caption=f"Best and worst matched units of seed {a} by {params.measure} (semi-matching, value: "
                            f"{value}) beside their partners in seed {b}, each by its {n_contexts} strongest token "
                            "occurrences in the probe text ([token] with 4 tokens either side, activation first)")


def main(inputs, outputs, params, log):
    from convergent.text import read_probe_tokens

    tokens = read_probe_tokens(inputs.act_a)
    if tokens is not None:
        return main_text(tokens, inputs, outputs, params)
    images = load_probe_images(params.dataset, read_image_index(inputs.act_a))
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"probe images with {images.shape[-1]} channels cannot be drawn")
    # no models given (a run without them): no filter images
    convs = [first_conv(path) for path in inputs.models] if len(inputs.models) == 2 else [None, None]
    for layer, matching in zip(params.layers, inputs.matching, strict=True):
        fig = plot(images, inputs, matching, layer, params.cfg, params.measure, params.pair, convs)
        save_figure(fig, outputs_named(outputs, f"{params.figure}_{layer}"), dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

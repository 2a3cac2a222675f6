"""Rule `figure_li2016_cluster_units`: the clusters of every layer shown by what their units see
(first seed pair); one job, so the probe images are loaded once.

* Fig. 5 (`li2016_fig5_{layer}`): the clusters (leaves of the hierarchical clustering) with the
  highest between-net similarity, one row each: net a's units (dashed blue frame) then net b's, every unit as a
  mosaic of the probe patches where it fires most.
* Fig. 12 (`li2016_fig12_{layer}`): more clusters, every unit by its single strongest patch;
  net a's units, a blank slot, net b's.
* Fig. 6 (`li2016_fig6_{layer}`): the hierarchical clustering tree (or, when it has too many
  leaves to draw, its most-split branch); each leaf shows its units' strongest patch (net a's
  framed). The root's children are the first-level clusters.

For probe text the same figures show each unit by its strongest token occurrences in context
(``[token]`` with a few tokens either side, activation first: the text analogue of a patch), drawn
as a small text panel in the unit's cell.
"""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from convergent.activations import layer_attrs, read_image_index, read_top_activations
from convergent.clustering import read_clusters_json
from convergent.data import load_probe_images
from convergent.patches import draw_patch_grid, tile, unit_patches
from convergent.plotting import outputs_named, save_figure

NET_A_COLOR = "tab:blue"


def unit_mosaic(images, records, attrs, n_patches: int) -> np.ndarray:
    """One unit as a square mosaic of its ``n_patches`` strongest patches (3×3 for 9); whole images
    with the position framed for units that see the whole input."""
    side = max(1, int(math.isqrt(min(n_patches, len(records)))))
    patches = unit_patches(images, records[: side * side], attrs)
    return tile(patches.reshape(side, side, *patches.shape[1:]), gap=1, fill=128)  # gray seams


def top_clusters(doc, n: int):
    """The ``n`` clusters with units of both nets, by between-net similarity, and their level.

    Leaves of the hierarchical clustering (first-level clusters re-split to at most 2αS units;
    with k from the eigengap the first level can be a handful of large clusters); the first
    level where no leaf holds both nets (2αS < 2 splits every cluster down to single units)."""
    for level, labels in (("leaves", "leaf_labels"), ("clusters", "labels")):
        table = doc[level].dropna(subset=["between"]).sort_values("between", ascending=False, kind="stable")
        if len(table):
            return table.head(n), labels
    return doc["leaves"].head(0), "leaf_labels"


def cluster_rows(doc, clusters, labels_key, cell, max_units: int):
    """Per cluster: the units of net a and of net b (capped at ``max_units`` each) as cells."""
    S, labels = doc["units"], doc[labels_key]
    rows = []
    for c in clusters.cluster:
        members = np.flatnonzero(labels == c)
        ua, ub = members[members < S], members[members >= S] - S
        rows.append((ua, ub, [cell("a", u) for u in ua[:max_units]], [cell("b", u) for u in ub[:max_units]]))
    return rows


def grid_of_rows(rows, blank):
    """``[rows, cols, h, w, C]`` cells: net a's units, one blank slot, net b's; padded with blanks."""
    width = max(len(ca) + 1 + len(cb) for _, _, ca, cb in rows)
    grid = []
    for _, _, ca, cb in rows:
        line = [*ca, blank, *cb]
        grid.append(np.stack(line + [blank] * (width - len(line))))
    return np.stack(grid)


def frame_units(ax, rows, h, w, gap):
    """Net a's cells in a dashed blue frame (the paper's dashed boxes), net b's in a thin gray
    one, so a patch as white as the background still shows where it is."""
    for r, (_, _, ca, cb) in enumerate(rows):
        for q in range(len(ca) + 1 + len(cb)):
            if q == len(ca):
                continue  # the blank slot between the nets
            net_a = q < len(ca)
            ax.add_patch(Rectangle((q * (w + gap) - 0.5, r * (h + gap) - 0.5), w, h, fill=False,
                                   ec=NET_A_COLOR if net_a else "0.5", lw=1.2 if net_a else 0.6,
                                   ls="--" if net_a else "-"))


def cluster_figure(doc, rows, clusters, title, row_height, pixels_per_inch=None):
    """``pixels_per_inch``: size the figure so that one cell pixel is drawn at that density (text
    cells, whose letters must stay legible), instead of by ``row_height`` inches per row."""
    blank = np.full_like(rows[0][2][0] if rows[0][2] else rows[0][3][0], 255)
    grid = grid_of_rows(rows, blank)
    n_rows, n_cols, h, w = grid.shape[:4]
    if pixels_per_inch:
        size = (2.2 + n_cols * (w + 2) / pixels_per_inch, 0.8 + n_rows * (h + 2) / pixels_per_inch)
    else:
        size = (min(2 + 0.9 * n_cols * row_height, 18), 0.6 + row_height * n_rows)
    fig, ax = plt.subplots(figsize=size, constrained_layout=True)
    labels = [f"#{i + 1}  sim {s:.2f}  ({len(ua)} | {len(ub)})"
              for i, ((ua, ub, _, _), s) in enumerate(zip(rows, clusters.between))]
    draw_patch_grid(ax, grid, row_labels=labels, gap=2, title=title)
    frame_units(ax, rows, h, w, 2)
    return fig


def leaf_strip(doc, leaf, cell, max_units):
    S = doc["units"]
    units = np.sort(leaf.units)
    ua, ub = units[units < S], units[units >= S] - S
    return ua, ub, [cell("a", u) for u in ua[:max_units]], [cell("b", u) for u in ub[:max_units]]


def tree_figure(doc, cell, max_units, max_leaves, shown="strongest patch", label=None):
    """Fig. 6: a subtree with at most ``max_leaves`` leaves, leaves shown by their units.

    The whole hierarchy if it is that small; otherwise, from the root, the branch with the most
    leaves is followed until it fits (the paper too shows the part below one cluster).
    ``label(net, unit)``: a unit as a short line of text instead of a ``cell`` image (probe text:
    a leaf is too narrow for a token's context drawn as a cell)."""
    root = doc["tree"]
    while len(root.leaves()) > max_leaves:
        root = max(root.children, key=lambda node: (len(node.leaves()), len(node.units)))
    whole = root is doc["tree"]
    leaves = root.leaves()
    x_of, depth_of = {}, {}

    def place(node, depth):
        if not node.children:
            x_of[id(node)] = leaves.index(node)
        else:
            for child in node.children:
                place(child, depth + 1)
            x_of[id(node)] = float(np.mean([x_of[id(c)] for c in node.children]))
        depth_of[id(node)] = depth

    place(root, 0)
    max_depth = max(depth_of.values())
    strips = [leaf_strip(doc, leaf, cell if label is None else (lambda net, u: None), max_units) for leaf in leaves]
    depth = max(1, max(max(len(ca), len(cb)) for _, _, ca, cb in strips))
    blank = None if label is not None else np.full_like(next(c for _, _, ca, cb in strips for c in (*ca, *cb)), 255)
    fig_w = max(6, 1.3 * len(leaves))
    fig = plt.figure(figsize=(min(fig_w, 24), 1.5 + 0.45 * max_depth + 0.65 * depth), constrained_layout=True)
    gs = fig.add_gridspec(2, len(leaves), height_ratios=[0.5 + 0.45 * max_depth, 0.3 + 0.65 * depth])
    ax = fig.add_subplot(gs[0, :])

    def draw(node):
        x, y = x_of[id(node)], -depth_of[id(node)]
        for child in node.children:
            cx, cy = x_of[id(child)], -depth_of[id(child)]
            ax.plot([x, x, cx, cx], [y, y - 0.5, y - 0.5, cy], color="black", lw=1)
            draw(child)
        S = doc["units"]
        na, nb = int(np.sum(node.units < S)), int(np.sum(node.units >= S))
        ax.text(x, y, f"{na}|{nb}", ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round", fc="white", ec="gray", lw=0.5))

    draw(root)
    ax.set_xlim(-0.6, len(leaves) - 0.4)
    ax.set_ylim(-max_depth - 0.4, 0.4)
    ax.axis("off")
    what = "the whole layer" if whole else f"one cluster of {len(root.units)} units"
    ax.set_title(f"{doc['layer']}: hierarchical clustering, {what} ("
                 f"{len(leaves)} leaves; leaves at most {doc['max_leaf_size']:.1f} units unless unsplittable). "
                 f"Boxes: units of net {doc['a']} | net {doc['b']}; below each leaf: net {doc['a']} "
                 + ("(blue) then" if label is not None else "(left, framed) and")
                 + f" net {doc['b']}, {shown} per unit", fontsize=8)
    for i, (ua, ub, ca, cb) in enumerate(strips):
        lax = fig.add_subplot(gs[1, i])
        if label is not None:
            lines = [(label("a", u), NET_A_COLOR) for u in ua[:max_units]] + \
                    [(label("b", u), "0.25") for u in ub[:max_units]]
            for r, (line, color) in enumerate(lines):
                lax.text(0.0, 1.0 - r / max(depth * 2, len(lines)), line, color=color, fontsize=5,
                         family="monospace", va="top", ha="left", transform=lax.transAxes, clip_on=False)
            lax.axis("off")
            continue
        # every leaf the same grid, net a's units in the left column, net b's in the right,
        # padded, so all cells share one scale
        grid = np.stack([np.stack([ca[r] if r < len(ca) else blank, cb[r] if r < len(cb) else blank])
                         for r in range(depth)])
        h, w = grid.shape[2:4]
        draw_patch_grid(lax, grid, gap=1)
        for col, cells in enumerate((ca, cb)):
            for r in range(len(cells)):
                lax.add_patch(Rectangle((col * (w + 1) - 0.5, r * (h + 1) - 0.5), w, h, fill=False,
                                        ec=NET_A_COLOR if col == 0 else "0.5", lw=1.2 if col == 0 else 0.6,
                                        ls="--" if col == 0 else "-"))
        more = lambda units: "" if len(units) <= max_units else f" (+{len(units) - max_units})"
        lax.set_xlabel(f"{doc['a']}: {', '.join(map(str, ua[:max_units]))}{more(ua)}\n"
                       f"{doc['b']}: {', '.join(map(str, ub[:max_units]))}{more(ub)}", fontsize=6)
    return fig


TOKEN_CONTEXT = 3  # tokens either side of a unit's strongest occurrences in the text cells


TEXT_UNITS_SHOWN = 4  # units per net in a text cluster row: wider rows would shrink the letters


def text_cell(lines: list[str], height: int, width: int = 200) -> np.ndarray:
    """``lines`` drawn as an RGB image of ``height`` x ``width`` pixels (monospace), so that a
    unit's token occurrences take a patch's place in the figures' grids."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    fig.text(0.02, 0.96, "\n".join(lines) or "(no occurrence)", ha="left", va="top", fontsize=5.5,
             family="monospace")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def main(inputs, outputs, params, log):
    from convergent.text import read_probe_tokens

    cfg = params.cfg
    tokens = read_probe_tokens(inputs.act_a)
    if tokens is not None:
        print("probe text: each unit is shown by its strongest token occurrences in context "
              "(the text analogue of its patches)", flush=True)
    # every layer in one job: the probe images are loaded once
    images = load_probe_images(params.dataset, read_image_index(inputs.act_a)) if tokens is None else None
    for json_path in inputs.json:
        draw_layer(read_clusters_json(json_path), images, inputs.act_a, inputs.act_b, cfg, outputs,
                   params.figures["dpi"], tokens=tokens)


def draw_layer(doc, images, act_a, act_b, cfg, outputs, dpi, tokens=None):
    layer = doc["layer"]
    top = {"a": read_top_activations(act_a, layer), "b": read_top_activations(act_b, layer)}
    text = tokens is not None
    if not text:
        attrs = layer_attrs(act_a, layer)
        n_patches = math.isqrt(min(cfg["patches"], top["a"].shape[1])) ** 2  # what a square mosaic holds

        def render(net, unit, n):
            return unit_mosaic(images, top[net][unit], attrs, n)

        many, one = f"its {n_patches} strongest patches", "its strongest patch"
    else:
        from convergent.token_figures import unit_contexts

        n_patches = min(3, cfg["patches"], top["a"].shape[1])

        def render(net, unit, n):
            return text_cell(unit_contexts(tokens, top[net][unit], n, TOKEN_CONTEXT), height=12 + 9 * n)

        many = f"its {n_patches} strongest token occurrences in context ([token], {TOKEN_CONTEXT} either side)"
        one = "its strongest token occurrence in context"
    mosaics = {}

    def mosaic(net, unit):
        if (net, unit) not in mosaics:
            mosaics[net, unit] = render(net, unit, n_patches)
        return mosaics[net, unit]

    def single(net, unit):
        return render(net, unit, 1)

    max_units = min(cfg["max_units_shown"], TEXT_UNITS_SHOWN) if text else cfg["max_units_shown"]
    marked = f"net {doc['a']} framed (dashed), then net {doc['b']}"
    figures = (("fig5", cfg["fig5_clusters"], mosaic, many, 1.0),
               ("fig12", cfg["fig12_clusters"], single, one, 0.55))
    for key, n, cell, what, height in figures:
        clusters, labels_key = top_clusters(doc, n)
        level = "hierarchical leaves" if labels_key == "leaf_labels" else "first level"
        if clusters.empty:
            fig = empty_figure(f"{layer}: no cluster holds units of both nets {doc['a']} and {doc['b']} "
                               f"(k = {doc['k']}, τ = {doc['tau']})")
        else:
            rows = cluster_rows(doc, clusters, labels_key, cell, max_units)
            fig = cluster_figure(doc, rows, clusters, f"{layer}: top {len(rows)} clusters ({level}) by between-net "
                                 f"similarity; each unit by {what}; {marked}"
                                 + (f"; at most {max_units} units per net" if text else ""), height,
                                 pixels_per_inch=100 if text else None)
        save_figure(fig, outputs_named(outputs, f"li2016_{key}_{layer}"), dpi=dpi)
    label = None
    if text:
        from convergent.text import token_context

        def label(net, unit):  # the unit and its strongest token, with one token either side
            best = top[net][unit][0]
            context = token_context(tokens[int(best["image"])], int(best["y"]), 1) if np.isfinite(best["value"]) else "-"
            return f"{doc[net]}:{unit} {context}"

    save_figure(tree_figure(doc, single, max_units, cfg["fig6_max_leaves"],
                            "strongest token (one either side)" if text else one.removeprefix("its "), label),
                outputs_named(outputs, f"li2016_fig6_{layer}"), dpi=dpi)


def empty_figure(message: str):
    """A figure that says why there is nothing to draw, rather than no file or a blank one."""
    fig, ax = plt.subplots(figsize=(7, 1.5))
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9, wrap=True)
    ax.axis("off")
    return fig


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

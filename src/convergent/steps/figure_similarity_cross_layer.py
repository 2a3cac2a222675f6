"""Rule `figure_similarity_cross_layer`: for every measure, A's layer i vs B's layer j.

One figure per measure: the map averaged over trained seed pairs and, beside it, over pairs of a
trained seed and an untrained network. Rows are net A's layers, columns net B's; every cell uses
one row per probe image (positions averaged), so diagonal and off-diagonal cells compare alike.
If networks trained from different seeds learn corresponding representations layer by layer,
the diagonal stands out. The table states it in numbers: mean diagonal, mean off-diagonal, and
the fraction of A's layers whose most similar layer of B is the same layer; the two means with
their bootstrap interval over seeds (`diagonal_lo`, `diagonal_hi`, `off_diagonal_lo`,
`off_diagonal_hi`: the mean over pairs of each pair's diagonal (off-diagonal) mean, pairs rebuilt
from the drawn seeds, untrained networks their own group; probe inputs fixed). The best-row
fraction is a function of the mean map, not a mean over pairs, and has none.
"""


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from convergent import similarity as sim
from convergent.intervals import merge_notes, pair_fields, settings_of
from convergent.plotting import outputs_named, save_figure
from convergent.tables import write_table

KINDS = [("trained", "trained vs trained"), ("untrained", "trained vs untrained")]


def mean_maps(frame: pd.DataFrame, layers: list[str], measure: str, kind: str) -> tuple[np.ndarray, int]:
    """``[L, L]`` map averaged over the pairs of ``kind``, and the number of pairs."""
    sub = frame[(frame["scope"] == "cross_layer") & (frame["measure"] == measure) & (frame["kind"] == kind)]
    n_pairs = sub.groupby(["net_a", "net_b"]).ngroups
    index = {layer: i for i, layer in enumerate(layers)}
    grid = np.full((len(layers), len(layers)), np.nan)
    for (la, lb), v in sub.groupby(["layer_a", "layer_b"])["value"].mean().items():
        grid[index[la], index[lb]] = v
    return grid, n_pairs


def diagonal_summary(grid: np.ndarray, higher_is_similar: bool) -> dict:
    off = ~np.eye(len(grid), dtype=bool)
    score = grid if higher_is_similar else -grid
    best = np.nanargmax(np.where(np.isnan(score), -np.inf, score), axis=1)
    return {"diagonal_mean": float(np.nanmean(np.diag(grid))),
            "off_diagonal_mean": float(np.nanmean(grid[off])) if off.any() else np.nan,
            "diagonal_is_best_row": float(np.mean(best == np.arange(len(grid))))}


def pair_means(frame: pd.DataFrame, measure: str, kind: str) -> dict:
    """``{(net_a, net_b): (diagonal mean, off-diagonal mean)}`` of each pair's own map."""
    sub = frame[(frame["scope"] == "cross_layer") & (frame["measure"] == measure) & (frame["kind"] == kind)]
    out = {}
    for (a, b), pair in sub.groupby(["net_a", "net_b"], sort=False):
        same = pair["layer_a"] == pair["layer_b"]
        off = pair.loc[~same, "value"]
        out[(a, b)] = (float(np.nanmean(pair.loc[same, "value"])),
                       float(np.nanmean(off)) if len(off) else np.nan)
    return out


def interval_columns(frame: pd.DataFrame, measure: str, kind: str, settings) -> dict:
    means = pair_means(frame, measure, kind)
    untrained = sorted({b for _, b in means}) if kind == "untrained" else []
    row, notes = {}, {}
    for i, name in enumerate(("diagonal", "off_diagonal")):
        fields = pair_fields({p: v[i] for p, v in means.items()}, settings, measure, untrained=untrained,
                             fixed="probe inputs fixed (one row per image)")
        row.update({f"{name}_lo": fields["lo"], f"{name}_hi": fields["hi"]})
        notes[name] = fields["note"]
    return {**row, "note": merge_notes(notes)}


def main(inputs, outputs, params, log):
    frame = pd.concat([pd.read_csv(p) for p in inputs.pairs], ignore_index=True)
    layers, measures = list(params.layers), list(params.cfg["measures"])
    settings = settings_of(params)
    rows = []
    for measure in measures:
        info = sim.MEASURES[measure]
        maps = [(label, *mean_maps(frame, layers, measure, kind), kind) for kind, label in KINDS]
        maps = [m for m in maps if m[2] > 0]
        finite = np.concatenate([m[1][np.isfinite(m[1])] for m in maps])
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0, 1)
        cmap = "viridis" if info.higher_is_similar else "viridis_r"  # bright = similar in every map
        side = 0.5 * len(layers) + 1.8
        fig, axes = plt.subplots(1, len(maps), figsize=(side * len(maps) + 0.8, side), squeeze=False,
                                 constrained_layout=True)
        for ax, (label, grid, n_pairs, kind) in zip(axes[0], maps):
            image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
            ax.set_yticks(range(len(layers)), layers, fontsize=7)
            ax.set_xlabel("net B layer", fontsize=8)
            ax.set_ylabel("net A layer", fontsize=8)
            ax.set_title(f"{label} ({n_pairs} pair{'s' if n_pairs != 1 else ''})", fontsize=9)
            if len(layers) <= 8:
                mid = (vmin + vmax) / 2
                for i in range(len(layers)):
                    for j in range(len(layers)):
                        bright = (grid[i, j] > mid) == info.higher_is_similar
                        ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="black" if bright else "white")
            rows.append({"measure": measure, "kind": kind, "pairs": n_pairs,
                         **diagonal_summary(grid, info.higher_is_similar),
                         **(interval_columns(frame, measure, kind, settings) if settings is not None else {})})
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8).ax.tick_params(labelsize=7)
        fig.suptitle(f"{info.label} ({info.reference}), every layer pair\none row per image: spatial mean",
                     fontsize=8)
        stem = f"similarity_cross_layer_{measure}"
        save_figure(fig, outputs_named(outputs, stem), dpi=params.figures["dpi"])
    table = pd.DataFrame(rows)
    caption = "Cross-layer similarity: same layer (diagonal) vs other layers"
    if settings is not None:
        columns = ["measure", "kind", "pairs", "diagonal_mean", "diagonal_lo", "diagonal_hi", "off_diagonal_mean",
                   "off_diagonal_lo", "off_diagonal_hi", "diagonal_is_best_row", "note"]
        table = table[columns].assign(level=settings.level, interval=settings.label)
        caption += (f"; lo, hi: {settings.level:.0%} bootstrap intervals over seeds of the diagonal and "
                    "off-diagonal means (see note)")
    write_table(table, str(outputs.csv)[: -len(".csv")], caption=caption)
    print(table.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

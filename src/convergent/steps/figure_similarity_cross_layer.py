"""Rule `figure_similarity_cross_layer`: for every measure, A's layer i vs B's layer j.

One figure per measure: the map averaged over trained seed pairs and, beside it, over pairs of a
trained seed and an untrained network. Rows are net A's layers, columns net B's; every cell uses
one row per probe image (positions averaged), so diagonal and off-diagonal cells compare alike.
If networks trained from different seeds learn corresponding representations layer by layer,
the diagonal stands out. The table states it in numbers: mean diagonal, mean off-diagonal, and
the fraction of A's layers whose most similar layer of B is the same layer.
"""


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from convergent import similarity as sim
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


def main(inputs, outputs, params, log):
    frame = pd.concat([pd.read_csv(p) for p in inputs.pairs], ignore_index=True)
    layers, measures = list(params.layers), list(params.cfg["measures"])
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
                         **diagonal_summary(grid, info.higher_is_similar)})
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8).ax.tick_params(labelsize=7)
        fig.suptitle(f"{info.label} ({info.reference}), every layer pair\none row per image: spatial mean",
                     fontsize=8)
        stem = f"similarity_cross_layer_{measure}"
        save_figure(fig, outputs_named(outputs, stem), dpi=params.figures["dpi"])
    table = pd.DataFrame(rows)
    write_table(table, str(outputs.csv)[: -len(".csv")],
                caption="Cross-layer similarity: same layer (diagonal) vs other layers")
    print(table.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Rule `figure_similarity_summary`: every measure along the network, same layer vs same layer.

One panel per measure; x: layer; three series, each mean ± std over pairs:
trained seed vs trained seed (the answer), trained seed vs an untrained network of the same
architecture (what architecture and input statistics alone give), and the permutation null
(trained pairs with B's rows shuffled: chance for that measure, sample size and width).
Also writes the numbers as a table.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from convergent import similarity as sim
from convergent.plotting import save_figure
from convergent.tables import write_table

SERIES = [  # (label, kind, null, colour)
    ("trained vs trained", "trained", "none", "tab:blue"),
    ("trained vs untrained", "untrained", "none", "tab:orange"),
    ("permutation null", "trained", "permutation", "tab:gray"),
]


def summarize(frame: pd.DataFrame, layers: list[str], measures: list[str]) -> pd.DataFrame:
    """Per layer and measure: mean and std over pairs of each series (permutations averaged
    within a pair first, so every pair weighs the same)."""
    same = frame[frame["scope"] == "same_layer"]
    per_pair = same.groupby(["kind", "null", "net_a", "net_b", "layer_a", "measure"], as_index=False)["value"].mean()
    rows = []
    for layer in layers:
        for measure in measures:
            row = {"layer": layer, "measure": measure}
            for label, kind, null, _ in SERIES:
                key = label.replace(" ", "_")
                v = per_pair[(per_pair["kind"] == kind) & (per_pair["null"] == null)
                             & (per_pair["layer_a"] == layer) & (per_pair["measure"] == measure)]["value"]
                row[f"{key}_mean"] = float(v.mean()) if len(v) else np.nan
                row[f"{key}_std"] = float(v.std(ddof=0)) if len(v) else np.nan
                row[f"{key}_pairs"] = int(len(v))
            rows.append(row)
    return pd.DataFrame(rows)


def main(inputs, outputs, params, log):
    frame = pd.concat([pd.read_csv(p) for p in inputs.pairs], ignore_index=True)
    layers, measures = list(params.layers), list(params.cfg["measures"])
    table = summarize(frame, layers, measures)
    write_table(table, str(outputs.csv)[: -len(".csv")],
                caption="Same-layer similarity, mean and std over network pairs")

    cols = min(5, len(measures))
    rows = int(np.ceil(len(measures) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.7 * rows), squeeze=False,
                             constrained_layout=True)
    x = np.arange(len(layers))
    for ax, measure in zip(axes.flat, measures):
        sub = table[table["measure"] == measure]
        for label, _, _, colour in SERIES:
            key = label.replace(" ", "_")
            mean, std = sub[f"{key}_mean"].to_numpy(), sub[f"{key}_std"].to_numpy()
            if np.isnan(mean).all():
                continue
            n = int(sub[f"{key}_pairs"].max())
            ax.errorbar(x, mean, yerr=std, marker="o", ms=3, lw=1.2, capsize=2, color=colour,
                        label=f"{label} ({n})")
        info = sim.MEASURES[measure]
        ax.set_title(info.label, fontsize=9)
        ax.set_xticks(x, layers, rotation=45 if len(layers) > 6 else 0, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
        if not info.higher_is_similar:
            ax.set_ylabel("lower = more similar", fontsize=7)
    for ax in list(axes.flat)[len(measures):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="best")
    fig.suptitle("Same layer across networks: mean ± std over pairs (n pairs in legend)", fontsize=10)
    save_figure(fig, [p for p in outputs if not str(p).endswith((".csv", ".md", ".tex"))],
                dpi=params.figures["dpi"])
    trained = table[["layer", "measure", "trained_vs_trained_mean", "permutation_null_mean"]]
    print(trained.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

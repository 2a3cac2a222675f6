"""Rule `figure_wang2018_fig1`: Wang et al. 2018 Fig. 1, the maximum matching similarity s(ε) of
every layer along the network, one line per ε, mean over all seed pairs with the s(ε) table's
multi-bootstrap interval as a band (over seeds, and over probe inputs where the `bootstrap_subspace`
replicates are given; `statistics` section); the trained-vs-untrained baseline (the paper's
supplement) as dashed lines on the same axes, with its interval as error bars. Layers with fewer than `subspace.min_rows_per_unit` rows per unit are shaded
and marked † (their s(ε) is inflated by the sample)."""

import matplotlib.pyplot as plt
import numpy as np

from convergent.intervals import subspace_table
from convergent.plotting import save_figure
from convergent.subspace_results import read_pair_result


def main(inputs, outputs, params, log):
    layers = list(params.layers)
    table = subspace_table([*inputs.pairs, *inputs.baseline], inputs.replicates, layers, params.statistics)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(layers) + 2), 3.6))
    x = np.arange(len(layers))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, table["eps"].nunique()))
    for color, (eps, g) in zip(colors, table.groupby("eps")):
        g = g.set_index("layer").reindex(layers)
        ax.plot(x, g["s_mean"], color=color, marker="o", ms=4, label=f"ε = {eps:g}")
        ax.fill_between(x, g["lo"].to_numpy(dtype=float), g["hi"].to_numpy(dtype=float), color=color,
                        alpha=0.2, lw=0)
        if "baseline_mean" in g and g["baseline_mean"].notna().any():
            mean = g["baseline_mean"].to_numpy(dtype=float)
            # the interval where there is one (one baseline pair with nothing varying has none)
            below = np.nan_to_num(mean - g["baseline_lo"].to_numpy(dtype=float)).clip(0)
            above = np.nan_to_num(g["baseline_hi"].to_numpy(dtype=float) - mean).clip(0)
            ax.errorbar(x + 0.08, mean, yerr=[below, above],
                        color=color, marker="x", ms=4, ls="--", capsize=2, alpha=0.8)
    if len(inputs.baseline):
        ax.plot([], [], "k--x", label="trained vs untrained")
    # layers with too few rows per unit: s(eps) there is inflated by the sample, not the nets
    flagged = set(table.loc[table["undersampled"].astype(bool), "layer"]) \
        if "undersampled" in table else set()
    for i, layer in enumerate(layers):
        if layer in flagged:
            ax.axvspan(i - 0.4, i + 0.4, color="0.85", zorder=0, lw=0)
    if flagged:
        ratio = table.groupby("layer")["rows_per_unit"].min()
        least = max(read_pair_result(p).min_rows_per_unit for p in inputs.pairs)
        ax.fill_between([], [], color="0.85",
                        label=f"† under {least:g} rows per unit: s(ε) inflated\n  by the sample ("
                        + ", ".join(f"{k}: {ratio[k]:.1f}" for k in layers if k in flagged) + ")")
    ticks = [f"{k}†" if k in flagged else k for k in layers]
    crowded = len(layers) > 8
    ax.set_xticks(x, ticks, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    ax.set_xlabel("layer (input → output)")
    ax.set_ylabel("maximum matching similarity s(ε)")
    ax.set_ylim(-0.03, 1.03)
    n_pairs = int(table["pairs"].max())
    over = "seeds and probe inputs" if table["note"].str.contains("input blocks").any() else "seeds"
    ax.set_title(f"Wang et al. Fig. 1: mean over {n_pairs} seed pairs, band: {table['level'].iloc[0]:.0%} interval "
                 f"over {over}", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.grid(alpha=0.3)
    save_figure(fig, outputs, dpi=params.figures["dpi"])
    print(table.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Rule `figure_wang2018_sample_size`: s(ε) of one layer as the number of sampled rows d grows,
one line per ε with the spread over repeats, the unit count marked: with d near the number of
units almost anything matches, so choose d where the curves have settled. The dashed line is the
`subspace.min_rows_per_unit` threshold below which results are flagged."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from convergent.plotting import save_figure


def main(inputs, outputs, params, log):
    frame = pd.read_csv(inputs.csv)
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, frame["eps"].nunique()))
    for color, (eps, g) in zip(colors, frame.groupby("eps")):
        g = g.sort_values("d")
        ax.errorbar(g["d"], g["mean"], yerr=g["std"], color=color, marker="o", ms=4, capsize=3,
                    label=f"ε = {eps:g}")
    units = int(frame["units"].iloc[0])
    ax.axvline(units, color="gray", ls=":", label=f"d = units ({units})")
    if "min_rows_per_unit" in frame and frame["min_rows_per_unit"].iloc[0] > 0:
        k, total = float(frame["min_rows_per_unit"].iloc[0]), int(frame["units_total"].iloc[0])
        ax.axvline(k * total, color="firebrick", ls="--",
                   label=f"d = {k:g}(n_x+n_y) = {k * total:,.0f}:\nflagged below")
    ax.set_xscale("log")
    ds = sorted(frame["d"].unique())
    ax.set_xticks(ds, [f"{d:,}" for d in ds], rotation=45, ha="right", fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("rows sampled d")
    ax.set_ylabel("maximum matching similarity s(ε)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{frame['layer'].iloc[0]}, seeds {frame['pair'].iloc[0]}: s(ε) vs. sample size",
                 fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.grid(alpha=0.3)
    save_figure(fig, outputs, dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

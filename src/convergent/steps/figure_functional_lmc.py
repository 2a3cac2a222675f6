"""Rule `figure_functional_lmc`: linear mode connectivity curves and the barrier table.

One figure per seed pair and one of the mean over pairs (± std): held-out loss and accuracy of
``(1 − α)·θ_A + α·θ_B'`` against α for B' = B unaligned, activation-matched and weight-matched
(the curves of Ainsworth et al. 2023; batch-norm statistics reset at every α as in Jordan et al.
2023). The table gives each pair's barrier and the mean and std over pairs.
"""

import matplotlib.pyplot as plt
import pandas as pd

from convergent.connectivity import barrier_table
from convergent.plotting import outputs_named, save_figure
from convergent.tables import write_table

STYLE = {"none": ("unaligned", "tab:gray"), "activation": ("activation matching", "tab:orange"),
         "weight": ("weight matching", "tab:blue")}


def draw(curves: pd.DataFrame, title: str):
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), constrained_layout=True)
    for alignment, (label, colour) in STYLE.items():
        sub = curves[curves["alignment"] == alignment]
        if sub.empty:
            continue
        stats = sub.groupby("alpha")[["loss", "accuracy"]].agg(["mean", "std"])
        alphas = stats.index.to_numpy()
        for ax, column in zip(axes, ("loss", "accuracy")):
            mean, std = stats[(column, "mean")].to_numpy(), stats[(column, "std")].fillna(0).to_numpy()
            ax.plot(alphas, mean, marker="o", ms=2.5, lw=1.4, color=colour, label=label)
            ax.fill_between(alphas, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
    reset = bool(curves["bn_reset"].any())
    axes[0].set_ylabel("held-out loss (cross-entropy)")
    axes[1].set_ylabel("held-out accuracy")
    for ax in axes:
        ax.set_xlabel("α   (0: net A, 1: net B')")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower center")
    fig.suptitle(title + (" (batch-norm statistics reset at every α)" if reset else ""), fontsize=9)
    return fig


def main(inputs, outputs, params, log):
    curves = pd.concat([pd.read_csv(p) for p in inputs.curves], ignore_index=True)
    for a, b in params.pairs:
        pair = curves[(curves["a"] == a) & (curves["b"] == b)]
        fig = draw(pair, f"Linear interpolation between seeds {a} and {b}")
        save_figure(fig, outputs_named(outputs, f"functional_lmc_{a}-{b}"), dpi=params.figures["dpi"])
    n = len(params.pairs)
    fig = draw(curves, f"Linear interpolation, mean ± std over {n} seed pair{'s' * (n > 1)}")
    save_figure(fig, outputs_named(outputs, "functional_lmc_mean"), dpi=params.figures["dpi"])
    table = barrier_table(curves)
    write_table(table, str(outputs.csv)[: -len(".csv")], float_format="{:.4f}",
                caption="Loss and accuracy barriers of linear interpolation between seed pairs")
    print(table.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

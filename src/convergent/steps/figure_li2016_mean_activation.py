"""Rule `figure_li2016_mean_activation`: the abstract's finding (3).

"The average activation values of neurons vary considerably within a network, yet the mean
activation values across different networks converge to an almost identical distribution":
per layer, each network's unit means sorted in decreasing order, all networks overlaid.
"""

import matplotlib.pyplot as plt
import numpy as np

from convergent.correlation import LayerStats
from convergent.plotting import save_figure


def main(inputs, outputs, params, log):
    stats = [LayerStats.load(p) for p in inputs.stats]
    fig, axes = plt.subplots(1, len(stats), figsize=(3.2 * len(stats), 3), constrained_layout=True, squeeze=False)
    for ax, st in zip(axes[0], stats):
        for seed, mean in zip(st.seeds, st.mean):
            ax.plot(np.sort(mean)[::-1], lw=1.2, label=f"net {seed}")
        # Finding (3) in numbers: how much the means vary within a net (coefficient of variation)
        # against how much the sorted curves differ between nets (mean |difference| / mean).
        scale = max(float(np.mean(st.mean)), 1e-12)
        within = float(np.mean(np.std(st.mean, axis=1))) / scale
        curves = np.sort(st.mean, axis=1)
        between = [np.mean(np.abs(curves[i] - curves[j])) / scale
                   for i in range(len(curves)) for j in range(i + 1, len(curves))]
        ax.set_title(f"{st.layer} ({st.units} units)", fontsize=9)
        ax.set_xlabel("unit rank", fontsize=8)
        ax.text(0.95, 0.95, f"within-net CV {within:.2f}\nbetween-net |Δ|/mean {np.mean(between):.2f}",
                transform=ax.transAxes, ha="right", va="top", fontsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("mean activation (sorted)")
    axes[0, -1].legend(fontsize=7)
    save_figure(fig, outputs, dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

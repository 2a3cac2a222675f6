"""Rule `figure_wang2018_fig2`: Wang et al. 2018 Fig. 2, the distribution of simple-match sizes
|X| + |Y| for the layer nearest the input and the one nearest the output, one histogram per ε,
pooled over the seed pairs (distinct simple matches found by randomized Algorithm 2, §5.2). A
layer with too few rows per unit gets no search; its panel says so."""

import matplotlib.pyplot as plt
import numpy as np

from convergent.plotting import save_figure
from convergent.subspace_results import read_pair_result


def main(inputs, outputs, params, log):
    layers = list(params.layers)
    shown = [layers[0], layers[-1]] if len(layers) > 1 else layers
    results = [read_pair_result(p) for p in inputs.pairs]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.4), squeeze=False)
    for ax, layer in zip(axes[0], shown):
        rs = [r for r in results if r.layer == layer and r.simple]
        eps_all = sorted({e for r in rs for e in r.simple})
        sizes = {e: np.concatenate([r.simple_sizes(e) for r in rs]) for e in eps_all}
        top = max([int(s.max()) for s in sizes.values() if len(s)], default=2)
        colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(1, len(eps_all))))
        width = 0.8 / max(1, len(eps_all))
        for k, (color, e) in enumerate(zip(colors, eps_all)):
            label = f"ε = {e:g}: {len(sizes[e]) / max(1, len(rs)):.1f} per pair"
            if top <= 60:  # sizes side by side per ε, so equal histograms do not hide each other
                counts = np.bincount(sizes[e].astype(int), minlength=top + 1) / max(1, len(rs))
                ax.bar(np.arange(top + 1) + (k - (len(eps_all) - 1) / 2) * width, counts,
                       width=width, color=color, label=label)
            else:
                ax.hist(sizes[e], bins=30, histtype="step", lw=1.5, color=color, label=label,
                        weights=np.full(len(sizes[e]), 1 / max(1, len(rs))))
        skipped = [r for r in results if r.layer == layer and r.undersampled]
        if skipped and not rs:
            r = skipped[0]
            ax.text(0.5, 0.5, f"no simple-match search:\nd = {r.sample_size:,} rows for "
                    f"{r.sample_size / r.rows_per_unit:.0f} live units\n({r.rows_per_unit:.1f} per unit, "
                    f"below {r.min_rows_per_unit:g}):\nmatches there are a property of the sample",
                    ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        elif not any(len(s) for s in sizes.values()):
            ax.text(0.5, 0.5, "no simple matches at any ε", ha="center", transform=ax.transAxes)
        ax.set_xlim(left=0.5)
        of_layer = [r for r in results if r.layer == layer]
        units = of_layer[0].match_x.shape[2] + of_layer[0].match_y.shape[2] if of_layer else 0
        ax.set_title(f"{layer} ({units} units in the two nets)", fontsize=9)
        ax.set_xlabel("simple match size |X| + |Y|")
        ax.set_ylabel("simple matches per seed pair")
        if eps_all:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Wang et al. Fig. 2: sizes of simple matches nearest the input and the output",
                 fontsize=9)
    save_figure(fig, outputs, dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

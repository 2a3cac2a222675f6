"""Rule `figure_li2016_fig1`: Li et al. Fig. 1 for one layer and the first seed pair.

(a, b) within-net correlation of Net1 and Net2, (c) between-net correlation, (d) between-net
correlation after permuting Net2's units by the bipartite matching to Net1.
"""

import matplotlib.pyplot as plt
import numpy as np

from convergent.correlation import LayerStats
from convergent.matching import bipartite_matching
from convergent.plotting import matrix_image, save_figure


def permuted_between(corr_ab: np.ndarray) -> np.ndarray:
    """Columns of the between-net matrix reordered so Net2's matched unit sits on the diagonal;
    unmatched (dead) units go last."""
    match = bipartite_matching(corr_ab)
    order = [p for p in match.partner if p >= 0]
    order += [j for j in range(corr_ab.shape[1]) if j not in set(order)]
    return corr_ab[:, order]


def main(inputs, outputs, params, log):
    stats = LayerStats.load(inputs.stats)
    a, b = params.pair
    pair = stats.pair(a, b)
    panels = [(pair.corr_aa, f"(a) within net {a}"), (pair.corr_bb, f"(b) within net {b}"),
              (pair.corr_ab, f"(c) between {a} and {b}"),
              (permuted_between(pair.corr_ab), f"(d) between, {b} permuted to match {a}")]
    # One grey scale for all panels (minimum black, maximum white, as the paper), so that (c)
    # and (d) read against the within-net panels.
    low = min(float(np.nanmin(m)) if np.isfinite(m).any() else 0.0 for m, _ in panels)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), constrained_layout=True)
    for ax, (matrix, title) in zip(axes, panels):
        image = matrix_image(ax, matrix, title, vmin=low, vmax=1)
    fig.colorbar(image, ax=axes, shrink=0.8, label="correlation")
    fig.suptitle(f"{stats.layer}: {stats.units} units, {stats.n_samples} samples "
                 f"(dead units in red)", fontsize=10)
    save_figure(fig, outputs, dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

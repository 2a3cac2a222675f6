"""Rule `figure_li2016_clusters`: the matrix and curve figures of the spectral clustering of
every layer (first seed pair); one job, as each figure is quick and starting Python is not.

* Fig. 13 (`li2016_fig13_{layer}`): the combined correlation matrix W of both nets, as
  extracted (net a's units, then net b's) and permuted into cluster order, clusters sorted by
  between-net similarity, leaves of the hierarchical clustering inside them; blocks outlined,
  block-diagonal when the clusters are real.
* Fig. 14 (`li2016_fig14_{layer}`): between-net and within-net similarity per cluster, each
  sorted descending, for the first-level clusters and for the leaves of the hierarchical
  clustering (the paper's curves). Undefined values (a cluster missing a net) are drawn as 0,
  the paper's tail.
* Eigenvalue plot (`li2016_eigenvalues_{layer}`): the smallest eigenvalues of the Laplacian and
  the k used, with its gap.
"""


import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from convergent.clustering import read_clusters_json
from convergent.correlation import LayerStats
from convergent.plotting import matrix_image, outputs_named, save_figure


def combined_corr(pair) -> np.ndarray:
    return np.block([[pair.corr_aa, pair.corr_ab], [pair.corr_ab.T, pair.corr_bb]])


def cluster_permutation(doc) -> tuple[np.ndarray, list[int], list[int]]:
    """Live vertices grouped by first-level cluster (clusters by between-net similarity,
    undefined last) and, inside each, by leaf of the hierarchical clustering (tree order), net
    a's units first in a leaf; dead units last. Also the first-level and the leaf block sizes."""
    labels = doc["labels"]
    table = doc["clusters"].set_index("cluster")
    live = np.flatnonzero(labels >= 0)
    clusters = np.unique(labels[live])
    key = np.nan_to_num(table.between.reindex(clusters).to_numpy(), nan=-np.inf)
    ranked = clusters[np.lexsort((clusters, -key))]
    first_level = {int(np.sort(node.units)[0]): node for node in doc["tree"].children}
    order, top_sizes, leaf_sizes = [], [], []
    for c in ranked:
        node = first_level[int(np.flatnonzero(labels == c)[0])]
        top_sizes.append(len(node.units))
        for leaf in node.leaves():
            units = np.sort(leaf.units)  # net a's vertices (< S) come first
            order.extend(units.tolist())
            leaf_sizes.append(len(units))
    dead = np.flatnonzero(labels < 0)
    return np.concatenate([order, dead]).astype(int), top_sizes, leaf_sizes


def _outline(ax, sizes, **style):
    start = 0
    for size in sizes:
        ax.add_patch(Rectangle((start - 0.5, start - 0.5), size, size, fill=False, **style))
        start += size


def fig13(doc, W):
    order, top_sizes, leaf_sizes = cluster_permutation(doc)
    S = doc["units"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6), constrained_layout=True)
    matrix_image(axes[0], W, f"(a) as extracted: net {doc['a']} | net {doc['b']}", vmin=-1, vmax=1)
    axes[0].axhline(S - 0.5, color="tab:orange", lw=0.8)
    axes[0].axvline(S - 0.5, color="tab:orange", lw=0.8)
    permuted = W[np.ix_(order, order)]
    matrix_image(axes[1], permuted, f"(b) {doc['k']} first-level clusters (by between-net similarity)",
                 vmin=-1, vmax=1)
    _outline(axes[1], top_sizes, ec="tab:orange", lw=1.0)
    image = matrix_image(axes[2], permuted, f"(c) {len(leaf_sizes)} leaves of the hierarchical clustering",
                         vmin=-1, vmax=1)
    _outline(axes[2], top_sizes, ec="tab:orange", lw=1.0)
    _outline(axes[2], leaf_sizes, ec="tab:cyan", lw=0.6)
    strip = (order >= S).astype(float)[None, :]  # which net each permuted unit comes from
    for ax in axes[1:]:
        top = ax.inset_axes([0, 1.0, 1, 0.025])
        top.imshow(strip, aspect="auto", cmap="coolwarm", vmin=-0.5, vmax=1.5, interpolation="nearest")
        top.set_xticks([]), top.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.7, label="correlation (dead units red, last)")
    fig.suptitle(f"{doc['layer']}: combined correlation matrix of nets {doc['a']} and {doc['b']} "
                 f"(τ = {doc['tau']}); strip: blue = net {doc['a']}, red = net {doc['b']}", fontsize=9)
    return fig


def fig14(doc):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True, sharey=True)
    for ax, key, title in ((axes[0], "clusters", f"first level (k = {doc['k']})"),
                           (axes[1], "leaves", f"after hierarchical re-splitting (> {doc['max_leaf_size']:.1f})")):
        table = doc[key]
        for column, style, name in (("between", "o-", "between-net"), ("within", "s-", "within-net")):
            values = np.sort(np.nan_to_num(table[column].to_numpy(), nan=0.0))[::-1]
            ax.plot(np.arange(1, len(values) + 1), values, style, ms=3, label=name)
        ax.set_xlabel("cluster (sorted)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{len(table)} clusters, {title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean correlation in cluster")
    fig.suptitle(f"{doc['layer']}: cluster similarity, nets {doc['a']} and {doc['b']} "
                 "(0: the cluster lacks one net / a second unit)", fontsize=9)
    return fig


def eigenvalue_figure(doc):
    lam, k = doc["eigenvalues"], doc["k"]
    fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    idx = np.arange(1, len(lam) + 1)
    ax.plot(idx, lam, "o-", ms=3, color="black")
    if doc.get("k_config") == "auto":
        ax.axvspan(1.5, len(lam) - 0.5, color="tab:blue", alpha=0.06, lw=0, label="k searched")
        ax.legend(fontsize=8, loc="upper left")
    ax.axvline(k + 0.5, color="tab:red", ls="--", lw=1)
    if k < len(lam):
        ax.annotate(f"k = {k}: gap {lam[k] - lam[k - 1]:.2f}", (k + 0.5, (lam[k] + lam[k - 1]) / 2),
                    xytext=(8, 0), textcoords="offset points", color="tab:red", fontsize=8, va="center")
    ax.set_xlabel("index of eigenvalue (ascending)")
    ax.set_ylabel("eigenvalue of L = D − W")
    how = "chosen at the largest eigengap" if doc.get("k_config") == "auto" else "from the config"
    ax.set_title(f"{doc['layer']}: Laplacian spectrum, nets {doc['a']} and {doc['b']} (k {how})", fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def main(inputs, outputs, params, log):
    dpi = params.figures["dpi"]
    for json_path, stats_path in zip(inputs.json, inputs.stats):
        doc = read_clusters_json(json_path)
        layer = doc["layer"]
        pair = LayerStats.load(stats_path).pair(doc["a"], doc["b"])
        save_figure(fig13(doc, combined_corr(pair)), outputs_named(outputs, f"li2016_fig13_{layer}"), dpi=dpi)
        save_figure(fig14(doc), outputs_named(outputs, f"li2016_fig14_{layer}"), dpi=dpi)
        save_figure(eigenvalue_figure(doc), outputs_named(outputs, f"li2016_eigenvalues_{layer}"), dpi=dpi)


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

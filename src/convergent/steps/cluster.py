"""Rule `cluster`: flat and hierarchical spectral clustering of one layer for one seed pair
(Li et al. §4.1, §4.3, §6.5–6.6).

Reads the pair's correlation blocks from the layer's joint statistics and writes one JSON file
(`convergent.clustering.write_clusters_json`): the Laplacian's smallest eigenvalues (to show the
eigengap), the first-level and leaf cluster of every unit, the hierarchical tree, and each
cluster's between-/within-net similarity. Dead units are listed and left out.
"""

from convergent.clustering import cluster_pair, write_clusters_json
from convergent.correlation import LayerStats
from convergent.progress import RateLog


def main(inputs, outputs, params, log):
    cfg = params.cfg
    a, b = params.pair
    stats = LayerStats.load(inputs.stats)
    pair = stats.pair(a, b)
    res = cluster_pair(pair.corr_aa, pair.corr_bb, pair.corr_ab, tau=cfg["tau"], k=cfg["k"], alpha=cfg["alpha"],
                       split_k=cfg["split_k"], seed=cfg["seed"], n_init=cfg["n_init"], k_max=cfg["k_max"],
                       dead_a=pair.dead_a, dead_b=pair.dead_b,
                       progress=RateLog(f"{stats.layer} {a}-{b} spectral clustering, units settled in a leaf"))
    max_leaf = 2 * cfg["alpha"] * stats.units
    write_clusters_json(res, outputs.json, layer=stats.layer, a=a, b=b, n_samples=int(stats.n_samples),
                        k_config=cfg["k"], alpha=cfg["alpha"], max_leaf_size=max_leaf, split_k=cfg["split_k"])
    both = res.clusters.dropna(subset=["between"])
    n_leaves_both = int(res.leaves.between.notna().sum())
    print(f"{stats.layer} {a}-{b}: tau {res.tau}, k = {res.k} (config: {cfg['k']}); {len(both)} of "
          f"{len(res.clusters)} clusters hold units of both nets, mean between-net similarity "
          f"{both.between.mean():.3f}; re-splitting clusters over {max_leaf:.1f} units gives "
          f"{len(res.leaves)} leaves ({n_leaves_both} with both nets); dead units: "
          f"{int(res.dead[:res.n_a].sum())} in {a}, {int(res.dead[res.n_a:].sum())} in {b}")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

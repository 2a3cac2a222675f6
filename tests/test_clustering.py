"""Spectral and hierarchical spectral clustering of two nets' units (Li et al. §4, §6.5–6.6),
on planted data: units of both nets are noisy mixtures of shared groups of known size."""

import numpy as np
import pandas as pd
import pytest
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import adjusted_rand_score

from convergent.clustering import (
    ClusterNode,
    cluster_order,
    cluster_pair,
    cluster_similarity,
    cluster_summary,
    eigengap_k,
    hierarchical_spectral_clustering,
    laplacian,
    laplacian_spectrum,
    read_clusters_json,
    similarity_graphs,
    spectral_clustering,
    write_clusters_json,
)

SIZES_A = [3, 5, 4, 6, 2, 4]  # units per planted group in net A
SIZES_B = [4, 3, 5, 4, 3, 5]  # the same groups, other sizes, in net B


def planted(seed=0, noise=0.6, n=3000, sizes_a=SIZES_A, sizes_b=SIZES_B, factors=2, shared=0.0):
    """Correlation blocks of two nets whose units are ReLU'd mixtures of group factors;
    ``shared`` mixes one factor common to all groups in, so groups are not disconnected."""
    rng = np.random.default_rng(seed)
    g = len(sizes_a)
    latent = rng.standard_normal((n, g, factors)) + shared * rng.standard_normal((n, 1, 1))

    def net(sizes):
        cols, truth = [], []
        for grp, size in enumerate(sizes):
            for _ in range(size):
                mix = rng.uniform(0.5, 1.0, factors)
                cols.append(np.maximum(latent[:, grp] @ mix + noise * rng.standard_normal(n), 0))
                truth.append(grp)
        perm = rng.permutation(len(cols))  # units are not ordered by group in a real net
        return np.stack(cols, 1)[:, perm], np.array(truth)[perm]

    xa, ta = net(sizes_a)
    xb, tb = net(sizes_b)
    c = np.corrcoef(np.hstack([xa, xb]), rowvar=False)
    na = xa.shape[1]
    return c[:na, :na], c[na:, na:], c[:na, na:], np.concatenate([ta, tb])


@pytest.mark.parametrize("shared, tau", [(0.0, 0.2), (0.6, 0.1)])
def test_spectral_clustering_recovers_planted_groups(shared, tau):
    caa, cbb, cab, truth = planted(shared=shared)
    W = similarity_graphs(caa, cbb, cab, tau=tau).combined
    if shared:  # groups joined by weak edges: the clusters are not just connected components
        assert connected_components(W > 0, directed=False)[0] == 1
    res = spectral_clustering(W, k=len(SIZES_A), seed=0)
    assert adjusted_rand_score(truth, res.labels) >= 0.9


def test_eigengap_finds_the_number_of_groups():
    caa, cbb, cab, truth = planted(seed=1)
    W = similarity_graphs(caa, cbb, cab, tau=0.2).combined
    res = spectral_clustering(W, k="auto", seed=0)
    assert res.k == len(SIZES_A)
    assert adjusted_rand_score(truth, res.labels) >= 0.9
    assert len(res.eigenvalues) > res.k  # enough of the spectrum to plot the gap


def test_hierarchical_splitting_recovers_groups_from_a_coarse_first_level():
    """§4.3: a k too small lumps groups together; re-splitting clusters larger than 2αS
    separates them again."""
    caa, cbb, cab, truth = planted(seed=2, sizes_a=[4] * 6, sizes_b=[4] * 6, noise=0.5)
    S = caa.shape[0]
    W = similarity_graphs(caa, cbb, cab, tau=0.2).combined
    alpha = 8 / (2 * S)  # leaves of at most 8 vertices: one planted group of both nets
    root, top = hierarchical_spectral_clustering(W, k=2, alpha=alpha, n_units=S, seed=0)
    assert top.k == 2 and len(root.children) == 2
    leaves = root.leaves()
    all_units = np.sort(np.concatenate([leaf.units for leaf in leaves]))
    np.testing.assert_array_equal(all_units, np.arange(2 * S))  # leaves partition the vertices
    assert all(len(leaf.units) <= 2 * alpha * S for leaf in leaves)
    labels = np.empty(2 * S, int)
    for i, leaf in enumerate(leaves):
        labels[leaf.units] = i
    assert adjusted_rand_score(truth, labels) >= 0.9
    assert root.depth() >= 3
    # the tree survives JSON
    back = ClusterNode.from_dict(root.to_dict(S), S)
    assert [sorted(x.units) for x in back.leaves()] == [sorted(x.units) for x in leaves]


def test_recursion_ends_at_single_units_when_2_alpha_s_is_below_one():
    """Complete sub-graphs and isolated (dead) vertices still split down to singletons."""
    W = np.zeros((8, 8))
    W[:3, :3] = W[3:6, 3:6] = 1.0  # two triangles; vertices 6, 7 isolated
    np.fill_diagonal(W, 0.0)
    root, top = hierarchical_spectral_clustering(W, k=1, alpha=0.01, n_units=4, seed=0)
    assert top.k == 1 and len(root.children) == 1
    assert sorted(int(leaf.units[0]) for leaf in root.leaves()) == list(range(8))
    assert all(len(leaf.units) == 1 for leaf in root.leaves())


def random_graph(rng, n, p_edge):
    upper = np.triu(rng.uniform(0.1, 1.0, (n, n)) * (rng.random((n, n)) < p_edge), 1)
    return upper + upper.T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_laplacian_is_psd_with_one_zero_per_component(seed):
    rng = np.random.default_rng(seed)
    W = random_graph(rng, 40, 0.04)
    L = laplacian(W)
    np.testing.assert_allclose(L.sum(axis=1), 0, atol=1e-12)
    values = np.linalg.eigvalsh(L)
    assert values.min() >= -1e-10
    n_comp, _ = connected_components(W > 0, directed=False)
    assert n_comp > 1
    assert np.sum(values < 1e-9) == n_comp
    ours, _ = laplacian_spectrum(W, n_comp + 1)
    np.testing.assert_allclose(ours, values[: n_comp + 1], atol=1e-10)


def test_laplacian_rejects_negative_or_asymmetric_weights():
    with pytest.raises(ValueError):
        laplacian(np.array([[0, -0.5], [-0.5, 0]]))
    with pytest.raises(ValueError):
        laplacian(np.array([[0, 0.5], [0.1, 0]]))


def test_similarity_graphs_threshold_and_blocks():
    caa, cbb, cab, _ = planted(seed=4)
    caa, cab = caa.copy(), cab.copy()
    caa[0, :] = caa[:, 0] = cab[0, :] = np.nan  # a dead unit of net A
    g = similarity_graphs(caa, cbb, cab, tau=0.3)
    na, nb = caa.shape[0], cbb.shape[0]
    for graph, c in ((g.single_a, caa), (g.single_b, cbb)):
        off = ~np.eye(len(c), dtype=bool)
        expected = np.where(np.nan_to_num(c, nan=0) > 0.3, c, 0)
        np.testing.assert_array_equal(graph[off], np.nan_to_num(expected)[off])
        assert np.all(np.diag(graph) == 0)
    np.testing.assert_array_equal(g.between, np.where(np.nan_to_num(cab) > 0.3, cab, 0))
    np.testing.assert_array_equal(g.combined[:na, na:], g.between)
    np.testing.assert_array_equal(g.combined[na:, :na], g.between.T)
    np.testing.assert_array_equal(g.combined[:na, :na], g.single_a)
    np.testing.assert_array_equal(g.combined[na:, na:], g.single_b)
    assert np.all(g.combined[0] == 0)  # dead unit: isolated vertex
    assert np.all(g.combined >= 0)
    assert g.combined.shape == (na + nb, na + nb)
    # a negative threshold never lets negative correlations in
    assert np.all(similarity_graphs(-caa, cbb, cab, tau=-1).single_a >= 0)


def test_cluster_similarity_against_loops():
    caa, cbb, cab, truth = planted(seed=5)
    na = caa.shape[0]
    labels = truth.copy()
    labels[na + np.flatnonzero(truth[na:] == 0)] = 7  # net B's group 0 alone: a B-only cluster
    table = cluster_similarity(caa, cbb, cab, labels).set_index("cluster")
    for c in np.unique(labels):
        pa = [i for i in range(na) if labels[i] == c]
        qb = [j for j in range(cbb.shape[0]) if labels[na + j] == c]
        pairs_ab = [cab[p, q] for p in pa for q in qb]
        pairs_a = [caa[p, r] for p in pa for r in pa if p != r]
        pairs_b = [cbb[q, r] for q in qb for r in qb if q != r]
        row = table.loc[c]
        assert (row["n_a"], row["n_b"]) == (len(pa), len(qb))
        for got, want in ((row["between"], pairs_ab), (row["within_a"], pairs_a),
                          (row["within_b"], pairs_b)):
            if want:
                assert got == pytest.approx(np.mean(want))
            else:
                assert np.isnan(got)
        avail = [np.mean(w) for w in (pairs_a, pairs_b) if w]
        assert row["within"] == pytest.approx(np.mean(avail))
    assert np.isnan(table.loc[0, "between"]) and np.isnan(table.loc[7, "between"])


def test_cluster_order_and_summary():
    labels = np.array([2, 0, 0, 0, 2, 1, 1])  # 3 units of A, 4 of B; cluster 1 only in B
    order = cluster_order(labels, n_a=3)
    blocks = labels[order]
    assert np.all(np.diff(blocks) >= 0)  # contiguous, by label
    for c in np.unique(labels):
        nets = (order[blocks == c] >= 3).astype(int)
        assert np.all(np.diff(nets) >= 0)  # net A first within a block
    by_key = cluster_order(labels, n_a=3, key=np.array([0.1, np.nan, 0.9]))
    assert labels[by_key][0] == 2 and labels[by_key][-1] == 1
    s = cluster_summary(labels, n_a=3)
    assert s == dict(n_clusters=3, n_both=2, mean_size_a=1.0, mean_size_b=4 / 3)


def test_eigengap_k():
    lam = np.array([0.0, 0.0, 0.0, 0.02, 1.5, 1.6, 2.0])
    assert eigengap_k(lam) == 4
    assert eigengap_k(lam, k_min=5) == 6
    assert eigengap_k(lam, k_max=3) == 3


def test_cluster_pair_leaves_dead_units_out():
    caa, cbb, cab, truth = planted(seed=6)
    na = caa.shape[0]
    caa, cab = caa.copy(), cab.copy()
    dead = [2, 9]  # units of net A that never fire: NaN rows and columns
    caa[dead, :] = caa[:, dead] = cab[dead, :] = np.nan
    res = cluster_pair(caa, cbb, cab, tau=0.2, k="auto", alpha=0.1, seed=0)
    assert res.k == len(SIZES_A)  # dead units took no eigenvalue of their own
    assert np.flatnonzero(res.labels < 0).tolist() == dead
    assert np.flatnonzero(res.leaf_labels < 0).tolist() == dead
    live = res.labels >= 0
    assert adjusted_rand_score(truth[live], res.labels[live]) >= 0.9
    assert len(res.clusters) == res.k and res.clusters.n_a.sum() == na - len(dead)
    assert all(len(leaf.units) <= 2 * 0.1 * na or len(leaf.units) == 1 for leaf in res.tree.leaves())
    assert len(res.leaves) == len(res.tree.leaves())
    assert not set(dead) & set(np.concatenate([leaf.units for leaf in res.tree.leaves()]).tolist())


def test_clusters_json_round_trip(tmp_path):
    caa, cbb, cab, _ = planted(seed=7)
    caa, cab = caa.copy(), cab.copy()
    caa[4, :] = caa[:, 4] = cab[4, :] = np.nan
    res = cluster_pair(caa, cbb, cab, tau=0.2, k=4, alpha=0.1, seed=0)
    write_clusters_json(res, tmp_path / "c.json", layer="conv1", a=0, b=1)
    doc = read_clusters_json(tmp_path / "c.json")
    assert (doc["layer"], doc["a"], doc["b"], doc["k"]) == ("conv1", 0, 1, 4)
    np.testing.assert_array_equal(doc["labels"], res.labels)
    np.testing.assert_array_equal(doc["leaf_labels"], res.leaf_labels)
    np.testing.assert_allclose(doc["eigenvalues"], res.eigenvalues)
    assert doc["dead_a"] == [4] and doc["dead_b"] == []
    pd.testing.assert_frame_equal(doc["leaves"], res.leaves, check_dtype=False)
    assert [sorted(n.units) for n in doc["tree"].leaves()] == [sorted(n.units) for n in res.tree.leaves()]
    assert doc["summary"]["flat"]["n_clusters"] == 4

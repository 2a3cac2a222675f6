"""Many-to-many groupings of units by spectral clustering (Li et al. 2016, §4, §6.4–6.6).

Units of two networks X (net A) and Y (net B) on one layer, S units each, are the 2S vertices of
a similarity graph whose edge weights are correlations above a threshold τ (§6.5). Vertices are
indexed net-major: ``0 … S−1`` are net A's units, ``S … 2S−1`` net B's.

* :func:`similarity_graphs`: single-net graphs ``G_X``, ``G_Y``, the bipartite between-net graph
  ``G_XY`` and the combined graph ``G_{X+Y}`` (§6.5).
* :func:`laplacian`: the unnormalised Laplacian ``L = D − W`` (§4.1).
* :func:`spectral_clustering`: k smallest eigenvectors of ``L``, then k-means (§4.1); with
  ``k="auto"`` k is chosen at the largest eigengap (footnote 7).
* :func:`hierarchical_spectral_clustering`: clusters larger than ``2αS`` are re-split
  recursively (§4.3); returns a :class:`ClusterNode` tree.
* :func:`cluster_similarity`: between-net and within-net similarity of every cluster (§6.6).

Choices the paper leaves open, made here:

* Edge weights: ``w = c`` where ``c > τ``, else 0; negative weights are never kept (τ is
  clipped at 0), so ``L`` stays positive semi-definite. NaN correlations (dead units) give no
  edges: a dead unit is an isolated vertex. Self-loops are dropped (they cancel in ``L``
  anyway).
* §6.6 averages within-net similarity over *distinct* unit pairs (the diagonal, always 1, would
  make any single-unit cluster look perfectly coherent); a cluster with fewer than two units of
  a net has no within-net similarity for that net, and one lacking either net has no between-net
  similarity (NaN here; the paper plots those as 0, the tail of Fig. 14).
* Re-splitting (§4.3) uses ``split_k`` clusters per split (default 2, a binary tree; "auto" picks
  it at the sub-graph's eigengap). A split that k-means cannot make (one non-empty cluster)
  leaves the node a leaf rather than looping.

>>> import numpy as np
>>> c = np.array([[1, .9, 0, 0], [.9, 1, 0, 0], [0, 0, 1, .8], [0, 0, .8, 1]])
>>> W = similarity_graphs(c, c, c, tau=0.5).combined
>>> labels = spectral_clustering(W, k=2, seed=0).labels
>>> bool(labels[0] == labels[1] == labels[4] == labels[5] != labels[2])
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
from sklearn.cluster import KMeans

from convergent.outputs import atomic_output
from convergent.progress import progress_callback


@dataclass(frozen=True)
class SimilarityGraphs:
    """Weighted adjacency matrices of the §6.5 graphs (zero = no edge)."""

    single_a: np.ndarray  # [S_a, S_a]
    single_b: np.ndarray  # [S_b, S_b]
    between: np.ndarray  # [S_a, S_b], the bipartite graph's biadjacency
    combined: np.ndarray  # [S_a+S_b, S_a+S_b] = G_X + G_Y + G_XY

    @property
    def n_a(self) -> int:
        return self.single_a.shape[0]


def threshold(c: np.ndarray, tau: float) -> np.ndarray:
    """Edge weights of a similarity graph: ``c`` where ``c > max(τ, 0)``, else 0 (NaN → 0)."""
    c = np.nan_to_num(np.asarray(c, dtype=np.float64), nan=0.0)
    return np.where(c > max(float(tau), 0.0), c, 0.0)


def similarity_graphs(corr_aa, corr_bb, corr_ab, tau: float = 0.0) -> SimilarityGraphs:
    """The single-net, between-net and combined similarity graphs of §6.5 at threshold τ.

    ``combined`` is the thresholded ``W_l = [[corr(X,X), corr(X,Y)], [corr(X,Y)ᵀ, corr(Y,Y)]]``
    of §4.1, without self-loops.
    """
    ga, gb, gab = threshold(corr_aa, tau), threshold(corr_bb, tau), threshold(corr_ab, tau)
    np.fill_diagonal(ga, 0.0)
    np.fill_diagonal(gb, 0.0)
    combined = np.block([[ga, gab], [gab.T, gb]])
    return SimilarityGraphs(ga, gb, gab, combined)


def laplacian(W: np.ndarray) -> np.ndarray:
    """Unnormalised graph Laplacian ``L = D − W``, ``D = diag(Σ_k w_jk)`` (§4.1).

    PSD for non-negative symmetric W, with one zero eigenvalue per connected component.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError("W must be square")
    if not np.allclose(W, W.T):
        raise ValueError("W must be symmetric")
    if (W < 0).any():
        raise ValueError("W must be non-negative (threshold the correlations first)")
    return np.diag(W.sum(axis=1)) - W


def laplacian_spectrum(W: np.ndarray, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` smallest eigenvalues (ascending) and eigenvectors of ``laplacian(W)``."""
    L = laplacian(W)
    n = L.shape[0] if n is None else min(int(n), L.shape[0])
    values, vectors = scipy.linalg.eigh(L, subset_by_index=[0, n - 1])
    return np.clip(values, 0.0, None), vectors  # round-off can make λ₁ ≈ −1e-16


def eigengap_k(eigenvalues: np.ndarray, k_min: int = 2, k_max: int | None = None) -> int:
    """k at the largest gap ``λ_{k+1} − λ_k`` of ascending eigenvalues, ``k_min ≤ k ≤ k_max``
    (footnote 7: "where the eigenvalue shows a relatively abrupt change").

    >>> eigengap_k(np.array([0, 0, 0.01, 2.0, 2.1]))
    3
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    k_max = len(lam) - 1 if k_max is None else min(int(k_max), len(lam) - 1)
    if k_max < k_min:
        raise ValueError(f"need more than k_min={k_min} eigenvalues, got {len(lam)}")
    gaps = np.diff(lam)  # gaps[k-1] = λ_{k+1} − λ_k
    return int(k_min + np.argmax(gaps[k_min - 1:k_max]))


@dataclass
class SpectralResult:
    """Cluster label per vertex, the k used and the Laplacian's smallest eigenvalues."""

    labels: np.ndarray
    k: int
    eigenvalues: np.ndarray


def spectral_clustering(W: np.ndarray, k: int | str = "auto", seed: int = 0, n_init: int = 10,
                        k_min: int = 2, k_max: int | None = None) -> SpectralResult:
    """Spectral clustering of §4.1: embed vertices by the k eigenvectors of the unnormalised
    Laplacian with the smallest eigenvalues, then k-means (scikit-learn) in that embedding.

    ``k="auto"`` picks k at the largest eigengap in ``[k_min, k_max]`` (``k_max`` defaults to
    half the vertices). ``eigenvalues`` holds the smallest ``max(k, k_max) + 1`` eigenvalues,
    enough to plot the gap. Labels are renumbered by first appearance, so they are stable
    under k-means' arbitrary label order.
    """
    W = np.asarray(W, dtype=np.float64)
    n = W.shape[0]
    if k == "auto":
        k_max = max(k_min, n // 2) if k_max is None else k_max
        values, vectors = laplacian_spectrum(W, min(n, k_max + 1))
        k = eigengap_k(values, k_min=k_min, k_max=k_max)
    else:
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(f"k={k} must be between 1 and the number of vertices {n}")
        n_eig = max(k, k_max or 0) + 1
        values, vectors = laplacian_spectrum(W, min(n, n_eig))
    embedding = vectors[:, :k]
    if k == 1:
        labels = np.zeros(n, dtype=int)
    else:
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(embedding)
    return SpectralResult(_renumber(labels), k, values)


def _renumber(labels: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inverse.ravel()]


@dataclass(eq=False)  # nodes are compared by identity: two nodes with equal units are still two
class ClusterNode:
    """A node of the hierarchical clustering tree: its vertices (combined indexing) and the
    sub-clusters it was re-split into (none for a leaf)."""

    units: np.ndarray
    children: list["ClusterNode"] = field(default_factory=list)

    def leaves(self) -> list["ClusterNode"]:
        if not self.children:
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]

    def depth(self) -> int:
        return 1 + max((c.depth() for c in self.children), default=0)

    def to_dict(self, n_a: int) -> dict:
        """JSON-ready: vertices split into net A's and net B's unit numbers."""
        u = np.sort(self.units)
        return {
            "size": int(len(u)),
            "units_a": [int(i) for i in u[u < n_a]],
            "units_b": [int(i - n_a) for i in u[u >= n_a]],
            "children": [c.to_dict(n_a) for c in self.children],
        }

    @classmethod
    def from_dict(cls, d: dict, n_a: int) -> "ClusterNode":
        units = np.array(list(d["units_a"]) + [i + n_a for i in d["units_b"]], dtype=int)
        return cls(units, [cls.from_dict(c, n_a) for c in d["children"]])


def labels_from_nodes(nodes: list[ClusterNode], n: int) -> np.ndarray:
    """Label per vertex given disjoint clusters covering all ``n`` vertices."""
    labels = np.full(n, -1)
    for i, node in enumerate(nodes):
        labels[node.units] = i
    if (labels < 0).any():
        raise ValueError("clusters do not cover every vertex")
    return labels


def hierarchical_spectral_clustering(W: np.ndarray, k: int | str, alpha: float, n_units: int,
                                     split_k: int | str = 2, seed: int = 0, n_init: int = 10,
                                     k_max: int | None = None, progress=None) -> tuple[ClusterNode, SpectralResult]:
    """Hierarchical spectral clustering of §4.3.

    First-level spectral clustering with ``k`` clusters (or "auto"); then every cluster with
    more than ``2·alpha·n_units`` vertices is re-clustered (spectral clustering of its own
    sub-graph, ``split_k`` parts) until all leaves are small enough or cannot be split.
    ``n_units`` is S_l, the units per network. Returns the root (its children are the
    first-level clusters) and the first-level :class:`SpectralResult`. ``progress``: None, True
    (a tqdm bar) or ``callable(done, total)``, counted in vertices settled in a leaf.
    """
    W = np.asarray(W, dtype=np.float64)
    report = progress_callback(progress, "spectral clustering", unit="vertex")
    settled = 0

    def leaf(node: ClusterNode) -> ClusterNode:
        nonlocal settled
        settled += len(node.units)
        if report is not None:
            report(settled, W.shape[0])
        return node

    if report is not None:
        report(0, W.shape[0])
    top = spectral_clustering(W, k=k, seed=seed, n_init=n_init, k_max=k_max)
    max_size = 2 * alpha * n_units

    def split(units: np.ndarray) -> ClusterNode:
        node = ClusterNode(units)
        if len(units) <= max_size or len(units) < 2:
            return leaf(node)
        sub_k = split_k if split_k == "auto" else min(int(split_k), len(units))
        sub = spectral_clustering(W[np.ix_(units, units)], k=sub_k, seed=seed, n_init=n_init,
                                  k_max=None if split_k != "auto" else max(2, len(units) // 2))
        parts = [units[sub.labels == c] for c in range(sub.k)]
        parts = [p for p in parts if len(p)]
        if len(parts) < 2:  # k-means found no split (identical embeddings): keep as a leaf
            return leaf(node)
        node.children = [split(p) for p in parts]
        return node

    root = ClusterNode(np.arange(W.shape[0]),
                       [split(np.flatnonzero(top.labels == c)) for c in range(top.k)])
    return root, top


def cluster_similarity(corr_aa, corr_bb, corr_ab, labels: np.ndarray) -> pd.DataFrame:
    """Between-net and within-net similarity of every cluster (§6.6).

    For cluster c with units P of net A and Q of net B: ``between`` = mean of ``corr(X,Y)``
    over P×Q; ``within_a`` / ``within_b`` = mean of ``corr(X,X)`` / ``corr(Y,Y)`` over distinct
    pairs of P / Q; ``within`` = their mean (``Sim_{X,Y} = (Sim_{X→X} + Sim_{Y→Y})/2``, or the
    one available). NaN where undefined (see module docstring); NaN correlations of dead units
    are ignored. One row per cluster label, sorted by label.
    """
    corr_aa = np.asarray(corr_aa, dtype=np.float64)
    corr_bb = np.asarray(corr_bb, dtype=np.float64)
    corr_ab = np.asarray(corr_ab, dtype=np.float64)
    labels = np.asarray(labels)
    n_a = corr_aa.shape[0]
    if labels.shape[0] != n_a + corr_bb.shape[0]:
        raise ValueError("labels must cover both nets' units (net A first)")

    def mean_offdiag(c, idx):
        if len(idx) < 2:
            return np.nan
        block = c[np.ix_(idx, idx)][~np.eye(len(idx), dtype=bool)]
        return np.nanmean(block) if np.isfinite(block).any() else np.nan

    rows = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        pa, qb = members[members < n_a], members[members >= n_a] - n_a
        between = np.nan
        if len(pa) and len(qb):
            block = corr_ab[np.ix_(pa, qb)]
            between = np.nanmean(block) if np.isfinite(block).any() else np.nan
        wa, wb = mean_offdiag(corr_aa, pa), mean_offdiag(corr_bb, qb)
        within = np.nanmean([wa, wb]) if np.isfinite([wa, wb]).any() else np.nan
        rows.append(dict(cluster=int(c), n_a=len(pa), n_b=len(qb), between=between,
                         within_a=wa, within_b=wb, within=within))
    return pd.DataFrame(rows)


def cluster_order(labels: np.ndarray, n_a: int, key: np.ndarray | None = None) -> np.ndarray:
    """Permutation of the 2S vertices grouping clusters into contiguous blocks (Fig. 13),
    net A's units first within a block. Clusters are ordered by ``key`` descending (e.g. their
    between-net similarity; NaN last) or, without a key, by label."""
    labels = np.asarray(labels)
    clusters = np.unique(labels)
    if key is not None:
        k = np.asarray(key, dtype=np.float64)
        clusters = clusters[np.lexsort((clusters, -np.nan_to_num(k, nan=-np.inf)))]
    net = (np.arange(len(labels)) >= n_a).astype(int)
    rank = np.empty(clusters.max() + 1 if len(clusters) else 0, dtype=int)
    rank[clusters] = np.arange(len(clusters))
    return np.lexsort((np.arange(len(labels)), net, rank[labels]))


def cluster_summary(labels: np.ndarray, n_a: int) -> dict:
    """Per layer: number of clusters, how many hold units of both nets, mean units per net."""
    labels = np.asarray(labels)
    net_b = np.arange(len(labels)) >= n_a
    uniq = np.unique(labels)
    size_a = np.array([np.sum((labels == c) & ~net_b) for c in uniq])
    size_b = np.array([np.sum((labels == c) & net_b) for c in uniq])
    return dict(n_clusters=int(len(uniq)), n_both=int(np.sum((size_a > 0) & (size_b > 0))),
                mean_size_a=float(size_a.mean()), mean_size_b=float(size_b.mean()))


@dataclass
class PairClustering:
    """Everything §4 derives for one layer and seed pair (vertices net-major, A first).

    ``labels``/``leaf_labels``: first-level and hierarchical (leaf) cluster per vertex, −1 for
    dead units, which are left out of the graph rather than given isolated vertices of their
    own (each would take a zero eigenvalue and one of the k eigenvectors).
    """

    n_a: int
    n_b: int
    tau: float
    k: int
    eigenvalues: np.ndarray
    labels: np.ndarray
    leaf_labels: np.ndarray
    tree: ClusterNode
    clusters: pd.DataFrame  # cluster_similarity of the first-level clusters
    leaves: pd.DataFrame  # cluster_similarity of the leaves

    @property
    def dead(self) -> np.ndarray:
        return self.labels < 0


def cluster_pair(corr_aa, corr_bb, corr_ab, tau: float = 0.0, k: int | str = "auto", alpha: float = 0.025,
                 split_k: int | str = 2, seed: int = 0, n_init: int = 10, k_max: int | None = None,
                 dead_a=None, dead_b=None, progress=None) -> PairClustering:
    """Graphs (§6.5), flat and hierarchical spectral clustering (§4.1, §4.3) and per-cluster
    similarity (§6.6) of one layer of nets A and B, from their correlation blocks.

    Dead units (given, or found as all-NaN rows) are excluded. ``k_max`` bounds the eigengap
    search of ``k="auto"``; by default half the units per net, S/2: the paper's k were ≈0.4·S,
    and at the top of an unnormalised Laplacian's spectrum the gaps follow single high-degree
    vertices, not clusters. ``progress``: None, True (a tqdm bar) or ``callable(done, total)``,
    counted in live vertices settled in a leaf of the hierarchy.
    """
    corr_aa, corr_bb, corr_ab = (np.asarray(c, dtype=np.float64) for c in (corr_aa, corr_bb, corr_ab))
    n_a, n_b = corr_aa.shape[0], corr_bb.shape[0]
    dead_a = np.isnan(corr_aa).all(axis=1) if dead_a is None else np.asarray(dead_a, bool)
    dead_b = np.isnan(corr_bb).all(axis=1) if dead_b is None else np.asarray(dead_b, bool)
    live = np.flatnonzero(~np.concatenate([dead_a, dead_b]))
    if len(live) < 2:
        raise ValueError("fewer than two live units: nothing to cluster")
    W = similarity_graphs(corr_aa, corr_bb, corr_ab, tau).combined[np.ix_(live, live)]
    S = max(n_a, n_b)
    if k != "auto":
        k = min(int(k), len(live))
    k_max = min(max(2, S // 2) if k_max is None else int(k_max), len(live) - 1)
    root, top = hierarchical_spectral_clustering(W, k=k, alpha=alpha, n_units=S, split_k=split_k, seed=seed,
                                                 n_init=n_init, k_max=k_max, progress=progress)

    def relabel(node: ClusterNode) -> ClusterNode:  # sub-graph indices → vertex indices
        return ClusterNode(live[node.units], [relabel(c) for c in node.children])

    tree = relabel(root)
    labels = np.full(n_a + n_b, -1)
    labels[live] = top.labels
    leaf_labels = np.full(n_a + n_b, -1)
    for i, leaf in enumerate(tree.leaves()):
        leaf_labels[leaf.units] = i

    def similarity(lab):
        keep = lab >= 0
        table = cluster_similarity(corr_aa, corr_bb, corr_ab, np.where(keep, lab, -1))
        return table[table.cluster >= 0].reset_index(drop=True)

    return PairClustering(n_a, n_b, float(tau), top.k, top.eigenvalues, labels, leaf_labels, tree,
                          similarity(labels), similarity(leaf_labels))


def _json_value(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN: an undefined similarity is null
    return value


def _records(table: pd.DataFrame) -> list[dict]:
    return [{k: _json_value(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def write_clusters_json(res: PairClustering, path, **meta) -> None:
    """The `cluster` rule's output (``clusters/{layer}/{a}-{b}.json``), written atomically.

    Keys: ``meta`` (layer, pair, config, ...), ``units`` (S), ``tau``, ``k``, ``eigenvalues``
    (smallest, ascending), ``labels_a/_b`` and ``leaf_labels_a/_b`` (−1: dead unit), ``dead_a/_b``,
    ``summary`` ({flat, leaves}: :func:`cluster_summary` of the live units), ``clusters`` and
    ``leaves`` (:func:`cluster_similarity` rows, null where undefined), ``tree``
    (:meth:`ClusterNode.to_dict`). Read back with :func:`read_clusters_json`.
    """
    n_a = res.n_a
    live = ~res.dead
    n_live_a = int(live[:n_a].sum())
    doc = {
        **{k: _json_value(v) for k, v in meta.items()},
        "units": n_a, "tau": res.tau, "k": res.k,
        "eigenvalues": res.eigenvalues.tolist(),
        "dead_a": np.flatnonzero(res.dead[:n_a]).tolist(), "dead_b": np.flatnonzero(res.dead[n_a:]).tolist(),
        "labels_a": res.labels[:n_a].tolist(), "labels_b": res.labels[n_a:].tolist(),
        "leaf_labels_a": res.leaf_labels[:n_a].tolist(), "leaf_labels_b": res.leaf_labels[n_a:].tolist(),
        "summary": {name: cluster_summary(lab[live], n_live_a)
                    for name, lab in (("flat", res.labels), ("leaves", res.leaf_labels))},
        "clusters": _records(res.clusters),
        "leaves": _records(res.leaves),
        "tree": res.tree.to_dict(n_a),
    }
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))


def read_clusters_json(path) -> dict:
    """:func:`write_clusters_json`'s document with arrays restored: ``labels``, ``leaf_labels``
    (net-major, length 2S), ``eigenvalues`` as numpy, ``clusters``/``leaves`` as DataFrames
    (null → NaN), ``tree`` as a :class:`ClusterNode`."""
    doc = json.loads(Path(path).read_text())
    doc["labels"] = np.array(doc["labels_a"] + doc["labels_b"], dtype=int)
    doc["leaf_labels"] = np.array(doc["leaf_labels_a"] + doc["leaf_labels_b"], dtype=int)
    doc["eigenvalues"] = np.array(doc["eigenvalues"], dtype=float)
    for key in ("clusters", "leaves"):
        doc[key] = pd.DataFrame(doc[key], columns=["cluster", "n_a", "n_b", "between", "within_a", "within_b",
                                                   "within"]).astype({"between": float, "within_a": float,
                                                                      "within_b": float, "within": float})
    doc["tree"] = ClusterNode.from_dict(doc["tree"], doc["units"])
    return doc

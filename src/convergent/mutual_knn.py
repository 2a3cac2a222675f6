"""Mutual k-nearest-neighbour alignment of two representations (Huh et al. 2024).

"The Platonic Representation Hypothesis" (Huh, Cheung, Wang & Isola, ICML 2024, §2 and
Appendix A) compares two models by the neighbourhoods they induce on the same inputs: for each
input, take its k nearest neighbours among the other inputs in each representation, and count
how many the two neighbour sets share,

    m(X, Y) = 1/n Σ_i |N_k^X(i) ∩ N_k^Y(i)| / k ,

1 when every input has the same k neighbours in both, about ``k/(n−1)`` by chance. Neighbours
are by cosine similarity of the inputs' feature vectors (rows l2-normalised, as in the authors'
code), an input is never its own neighbour, and ties are broken by index. The measure needs one
row per input: a conv layer's rows are its per-image spatial means.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(50, 8))
>>> mutual_knn(x, 2 * x, k=5)
1.0
"""

from __future__ import annotations

import numpy as np


def knn_indices(x: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]`` indices of each row's k nearest other rows by cosine similarity (nearest first;
    ties to the lower index). Zero rows have similarity 0 to everything."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and n - 1 = {n - 1}, got {k}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    # stable sort on -sim: equal similarities keep index order
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def mutual_knn(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Mean fraction of shared k nearest neighbours; rows of ``x`` and ``y`` are paired inputs."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need paired 2-D matrices, got shapes {x.shape} and {y.shape}")
    n = x.shape[0]
    nx, ny = knn_indices(x, k), knn_indices(y, k)
    hits = np.zeros((n, n), dtype=bool)
    rows = np.arange(n)[:, None]
    hits[rows, nx] = True
    shared = hits[rows, ny].sum(axis=1)
    return float(shared.mean() / k)

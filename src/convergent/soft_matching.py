"""Soft matching distance between two layers' units (Khosla & Williams 2023).

Li et al.'s bipartite matching pairs each unit of one network with one unit of the other; with
different widths a one-to-one matching leaves units out. Khosla & Williams ("Soft matching
distance: a metric on neural representations that captures single-neuron tuning", UniReps 2023)
relax the permutation to a transport plan ``T`` between the two sets of units with uniform
marginals (row sums ``1/p``, column sums ``1/q``):

    d(X, Y)² = min_T  Σ_ij T_ij · ‖x_i − y_j‖² ,

where ``x_i`` is unit ``i``'s tuning curve (its column over the ``n`` paired inputs). With equal
widths an optimal ``T`` is a permutation divided by ``p`` (Birkhoff–von Neumann), so the distance
is the permutation (hard matching) distance; otherwise a unit's mass may be split. It is a metric
(symmetric, triangle inequality): the 2-Wasserstein distance between the two empirical
distributions of tuning curves. Like Procrustes, it is not invariant to rotations of either
representation: it cares which unit does what.

Conventions here, so values compare across layers and widths: each unit is centred over the
inputs, inner products are means over inputs (``xᵀy / n``: covariances), and each representation is
scaled so that its units' mean squared norm is 1. Then ``d² = 2 − 2·Σ T_ij cov_ij`` lies in
``[0, 4]``, 0 for the same tuning curves up to a relabelling of units. Everything needed is in the
covariances, so the distance runs from streamed statistics (:func:`soft_matching_distance_cov`).

The transport problem is solved exactly by ``ot.emd`` (POT, network simplex).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(100, 4))
>>> round(soft_matching_distance(x, x[:, [2, 0, 3, 1]] * 3.0), 6)
0.0
"""

from __future__ import annotations

import os
import sys

import numpy as np


def _import_ot():
    """POT, without letting its backend detection import torch (seconds per job) into a job
    that has not imported it: this module only hands POT numpy arrays."""
    for module, key in (("torch", "POT_BACKEND_DISABLE_PYTORCH"), ("jax", "POT_BACKEND_DISABLE_JAX"),
                        ("tensorflow", "POT_BACKEND_DISABLE_TENSORFLOW"), ("cupy", "POT_BACKEND_DISABLE_CUPY")):
        if module not in sys.modules:
            os.environ.setdefault(key, "1")
    import ot

    return ot


def transport_cost(cov_xx, cov_yy, cov_xy) -> np.ndarray:
    """``[p, q]`` matrix of ``‖x_i − y_j‖²`` (means over inputs) after scaling each side to mean
    squared unit norm 1."""
    cov_xx, cov_yy, cov_xy = (np.asarray(c, dtype=np.float64) for c in (cov_xx, cov_yy, cov_xy))
    var_x, var_y = np.clip(np.diag(cov_xx), 0, None), np.clip(np.diag(cov_yy), 0, None)
    sx, sy = var_x.mean(), var_y.mean()
    if sx <= 0 or sy <= 0:
        raise ValueError("a representation has no variance (all units constant)")
    return var_x[:, None] / sx + var_y[None, :] / sy - 2 * cov_xy / np.sqrt(sx * sy)


def soft_matching_plan(cov_xx, cov_yy, cov_xy) -> tuple[np.ndarray, float]:
    """The optimal transport plan ``[p, q]`` (uniform marginals) and the squared distance."""
    ot = _import_ot()
    cost = transport_cost(cov_xx, cov_yy, cov_xy)
    p, q = cost.shape
    plan = ot.emd(np.full(p, 1.0 / p), np.full(q, 1.0 / q), cost)
    return plan, float(max((plan * cost).sum(), 0.0))


def soft_matching_distance_cov(cov_xx, cov_yy, cov_xy) -> float:
    """Soft matching distance from covariances (``ddof`` does not matter: it cancels)."""
    return float(np.sqrt(soft_matching_plan(cov_xx, cov_yy, cov_xy)[1]))


def soft_matching_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Soft matching distance between paired activation matrices ``[n, p]`` and ``[n, q]``."""
    from convergent.similarity import covariances

    return soft_matching_distance_cov(*covariances(x, y))

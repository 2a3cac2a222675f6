"""Rogue dimensions: units whose mean or variance is far above the rest of their layer.

Timkey & van Schijndel (2021, "All bark and no bite: rogue dimensions in transformer language
models obscure representational quality") found that in a transformer's residual stream one to
three dimensions with a huge mean and variance dominate cosine similarity, and with it every
measure that sums over units (linear CKA, Procrustes, RSA on Euclidean distances): such a
measure then reports those few units rather than the representation. This module flags them from
each unit's mean ``m_u`` and standard deviation ``s_u`` over the layer's rows (the streamed
statistics, ``stats/{layer}.h5``), and standardises units for measures that should not be
dominated by them.

The criterion (a unit is *rogue* when either holds; units with zero variance are dead, not rogue):

* **variance ratio** ``r_u = s_u² / mean_v s_v²`` (mean over the layer's live units) is at least
  ``variance_ratio`` (default 10: one unit with the variance of ten typical units);
* **mean z** ``z_u = (|m_u| − median_v |m_v|) / (1.4826 · MAD_v |m_v|)`` is at least ``mean_z``
  (default 10). The z-score is robust (median and median absolute deviation) because an ordinary
  one is dragged by the outliers it looks for and can never exceed ``sqrt(n − 1)``.

Also reported, not used to flag: the **cosine share** ``c_u = m_u² / Σ_v (m_v² + s_v²)``, the
unit's part of the expected inner product of two random rows relative to a row's expected
squared norm: the moment form of Timkey & van Schijndel's contribution to expected cosine
similarity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: default thresholds (the schema's similarity.rogue_variance_ratio and rogue_mean_z)
VARIANCE_RATIO = 10.0
MEAN_Z = 10.0
#: a consistent estimator of a normal distribution's standard deviation from its MAD
MAD_SCALE = 1.4826

COLUMNS = ["layer", "seed", "unit", "mean", "std", "variance_ratio", "mean_z", "cosine_share", "rogue",
           "criterion"]


def unit_statistics(mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """Per unit of one layer of one network: ``variance_ratio``, ``mean_z``, ``cosine_share`` and
    ``dead`` (zero variance), from the units' means and standard deviations (``[n]`` each).

    >>> s = unit_statistics(np.array([0.1, -0.2, 0.1, 9.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    >>> bool(s["mean_z"][3] > 10), float(s["variance_ratio"][3])
    (True, 1.0)
    """
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    var = std ** 2
    dead = var <= 0
    live_var = var[~dead]
    typical = live_var.mean() if live_var.size else 0.0
    ratio = np.where(dead | (typical <= 0), 0.0, var / (typical if typical > 0 else 1.0))
    size = np.abs(mean)
    centre = np.median(size[~dead]) if (~dead).any() else 0.0
    spread = MAD_SCALE * np.median(np.abs(size[~dead] - centre)) if (~dead).any() else 0.0
    if spread <= 0:  # more than half the units share one |mean|: fall back to the mean deviation
        spread = np.sqrt(np.pi / 2) * np.mean(np.abs(size[~dead] - centre)) if (~dead).any() else 0.0
    z = np.where(dead, 0.0, (size - centre) / spread) if spread > 0 else np.zeros_like(size)
    norm = float(np.sum(mean ** 2 + var))
    cosine = mean ** 2 / norm if norm > 0 else np.zeros_like(mean)
    return {"variance_ratio": ratio, "mean_z": z, "cosine_share": cosine, "dead": dead}


def rogue_mask(mean: np.ndarray, std: np.ndarray, variance_ratio: float = VARIANCE_RATIO,
               mean_z: float = MEAN_Z) -> np.ndarray:
    """Boolean ``[n]``: the rogue units of one layer of one network (the module's criterion)."""
    s = unit_statistics(mean, std)
    return ~s["dead"] & ((s["variance_ratio"] >= variance_ratio) | (s["mean_z"] >= mean_z))


def rogue_table(layers: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], variance_ratio: float = VARIANCE_RATIO,
                mean_z: float = MEAN_Z) -> pd.DataFrame:
    """One row per rogue unit, and per layer and network the unit with the largest variance
    ratio even when it is not rogue (so the table shows how far from the criterion a layer is).

    ``layers``: layer -> (seeds ``[S]``, means ``[S, n]``, stds ``[S, n]``), as in
    :class:`convergent.correlation.LayerStats`. Columns: :data:`COLUMNS`; ``criterion`` names the
    test(s) a rogue unit passes (``variance``, ``mean``, ``variance+mean``) or is empty."""
    rows = []
    for layer, (seeds, means, stds) in layers.items():
        for seed, mean, std in zip(np.asarray(seeds), np.asarray(means), np.asarray(stds)):
            s = unit_statistics(mean, std)
            by_var = ~s["dead"] & (s["variance_ratio"] >= variance_ratio)
            by_mean = ~s["dead"] & (s["mean_z"] >= mean_z)
            shown = set(np.flatnonzero(by_var | by_mean).tolist())
            shown.add(int(np.argmax(s["variance_ratio"])))
            for u in sorted(shown, key=lambda u: -s["variance_ratio"][u]):
                criterion = "+".join(name for name, hit in (("variance", by_var[u]), ("mean", by_mean[u])) if hit)
                rows.append({"layer": layer, "seed": int(seed), "unit": int(u), "mean": float(mean[u]),
                             "std": float(std[u]), "variance_ratio": float(s["variance_ratio"][u]),
                             "mean_z": float(s["mean_z"][u]), "cosine_share": float(s["cosine_share"][u]),
                             "rogue": bool(criterion), "criterion": criterion})
    return pd.DataFrame(rows, columns=COLUMNS)


def rogue_counts(table: pd.DataFrame, layers: list[str]) -> dict[str, int]:
    """Per layer, the most rogue units any one network has (0 where none)."""
    rogue = table[table["rogue"].astype(bool)]
    counts = rogue.groupby(["layer", "seed"]).size()
    return {layer: int(counts[layer].max()) if layer in counts.index.get_level_values(0) else 0
            for layer in layers}


def standardize(x: np.ndarray) -> np.ndarray:
    """Columns of ``x`` scaled to unit standard deviation over its rows (ddof 0); constant
    columns become 0 (a dead unit carries nothing, standardised or not). Centring is left to the
    measures, which all centre."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    return np.divide(x, std, out=np.zeros_like(x), where=std > 0)


def standardize_covs(cov_xx: np.ndarray, cov_yy: np.ndarray, cov_xy: np.ndarray):
    """The covariances of standardised units (correlations), from the raw covariances; units with
    zero variance get zero rows and columns, as :func:`standardize` gives them."""
    def inverse_std(cov):
        d = np.diag(cov).astype(np.float64)
        return np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d > 0)

    ix, iy = inverse_std(cov_xx), inverse_std(cov_yy)
    return (cov_xx * ix[:, None] * ix[None, :], cov_yy * iy[:, None] * iy[None, :],
            cov_xy * ix[:, None] * iy[None, :])

"""Per-block joint histograms: bootstrap replicates of mutual information without re-binning.

Li et al. (2016, §3.2) estimate the mutual information of every unit pair from percentile bins
(:mod:`convergent.mutual_information`). A replicate that reweights blocks of probe inputs needs
the joint histogram of its rows, which is the weighted sum of per-block joint histograms.
Convention: the bin edges are fixed once, on the full sample; a replicate reweights the same
binned samples (re-estimating the percentile edges per replicate would need the raw values, and
the edges' own noise is not what the interval is about). Use with
:func:`convergent.blocks.pair_statistic` and :func:`convergent.statistics.pairwise`.

Memory ``8 B n_a n_b K^2`` bytes (K = bins + 1; 100 blocks of two 128-unit layers at 21 codes:
5.8 GB), so keep count blocks for small layers or few blocks. On disk (:meth:`CountBlocks.save`):
``joint`` uint32 ``[B, n_a, K, n_b, K]`` (compressed), ``marginal_a``/``marginal_b`` ``[B, n, K]``,
``rows``, ``input_block``, ``dead_a``/``dead_b``; attrs ``format = "convergent.blocks/counts"``,
``version``, ``n_codes``, ``edges = "full sample"``.

>>> import numpy as np
>>> from convergent.blocks import input_blocks, resampled_rows
>>> from convergent.mutual_information import bin_codes, mutual_information_from_codes
>>> rng = np.random.default_rng(0)
>>> x = np.maximum(rng.normal(size=(300, 3)), 0); y = np.maximum(x + rng.normal(size=(300, 3)), 0)
>>> codes_x, codes_y = bin_codes(x, 4, device="cpu"), bin_codes(y, 4, device="cpu")
>>> block = input_blocks(300, 10)
>>> counts = CountBlocks(3, 3, 5, 10); counts.update(codes_x, codes_y, block)
>>> w = np.bincount(rng.integers(0, 10, 10), minlength=10); rows = resampled_rows(block, w)
>>> bool(np.allclose(counts.mutual_information(w), mutual_information_from_codes(codes_x[rows], codes_y[rows], 5)))
True
"""

from __future__ import annotations

import os

import h5py
import numpy as np
from scipy.special import xlogy

from convergent.blocks import COUNTS_FORMAT, VERSION, _check_format, _group_rows
from convergent.matching import bipartite_matching, semi_matching
from convergent.mutual_information import joint_counts
from convergent.outputs import atomic_output
from convergent.statistics import _counts

__all__ = ["CountBlocks"]


class CountBlocks:
    """Per-block joint histograms of every unit pair of two networks, from bin codes (the edges
    fixed on the full sample: :func:`convergent.mutual_information.bin_codes`).

    ``joint[b, i, k, j, l]`` counts the block's rows with ``codes_a[:, i] == k`` and
    ``codes_b[:, j] == l``; memory ``8 B n_a n_b K^2`` bytes (float64, exact integers).
    ``dead_a``/``dead_b``: units constant over the full sample, NaN in every replicate as in
    :func:`convergent.mutual_information.mutual_information`.
    """

    MEASURES = ("mi_matching", "mi_semi")

    def __init__(self, n_a: int, n_b: int, n_codes: int, n_blocks: int,
                 dead_a: np.ndarray | None = None, dead_b: np.ndarray | None = None):
        self.n_codes = int(n_codes)
        self.rows = np.zeros(n_blocks, dtype=np.int64)
        self.joint = np.zeros((n_blocks, n_a, n_codes, n_b, n_codes))
        self.marginal_a = np.zeros((n_blocks, n_a, n_codes))
        self.marginal_b = np.zeros((n_blocks, n_b, n_codes))
        self.dead_a = np.zeros(n_a, bool) if dead_a is None else np.asarray(dead_a, bool)
        self.dead_b = np.zeros(n_b, bool) if dead_b is None else np.asarray(dead_b, bool)

    @property
    def n_blocks(self) -> int:
        return len(self.rows)

    def replicates(self, measure: str, weights: np.ndarray, **kwargs) -> np.ndarray:
        """Mean bipartite (``mi_matching``) or semi-matching (``mi_semi``) mutual information of
        the units, Li et al.'s MI summaries, in every replicate (rows of ``weights``)."""
        if measure not in self.MEASURES:
            raise ValueError(f"count blocks give {self.MEASURES}, not {measure!r}")
        match = bipartite_matching if measure == "mi_matching" else semi_matching
        out = []
        for mi in self.iter_mutual_information(weights, **kwargs):
            value = match(mi).value
            out.append(float(np.nanmean(value)) if np.isfinite(value).any() else np.nan)
        return np.array(out)

    def update(self, codes_a: np.ndarray, codes_b: np.ndarray, block_of_rows: np.ndarray) -> None:
        k = self.n_codes
        for b, rows in _group_rows(block_of_rows):
            ca, cb = np.asarray(codes_a)[rows], np.asarray(codes_b)[rows]
            self.joint[b] += joint_counts(ca, cb, k, device="cpu")
            self.marginal_a[b] += _counts(ca.T, k)
            self.marginal_b[b] += _counts(cb.T, k)
            self.rows[b] += len(rows)

    def iter_mutual_information(self, weights: np.ndarray, batch: int = 8):
        """Plug-in MI (nats) ``[n_a, n_b]`` of each replicate, as
        :func:`convergent.mutual_information.mutual_information_from_codes` computes it on the
        replicate's rows: ``log N + (sum n_kl log n_kl - sum n_k log n_k - sum n_l log n_l) / N``."""
        w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if w.shape[1] != self.n_blocks:
            raise ValueError(f"weights for {w.shape[1]} blocks; these counts have {self.n_blocks}")
        flat = self.joint.reshape(self.n_blocks, -1)
        for r in range(0, len(w), batch):
            wb = w[r:r + batch]
            n = wb @ self.rows
            joint = (wb @ flat).reshape(len(wb), *self.joint.shape[1:])
            j = xlogy(joint, joint).sum(axis=(2, 4))
            ma = np.tensordot(wb, self.marginal_a, 1)
            mb = np.tensordot(wb, self.marginal_b, 1)
            ha, hb = xlogy(ma, ma).sum(2), xlogy(mb, mb).sum(2)
            for i in range(len(wb)):
                mi = np.maximum(np.log(n[i]) + (j[i] - ha[i][:, None] - hb[i][None, :]) / n[i], 0.0)
                mi[self.dead_a, :] = np.nan
                mi[:, self.dead_b] = np.nan
                yield mi

    def mutual_information(self, weights: np.ndarray) -> np.ndarray:
        """MI of one replicate (``weights`` ``[B]``)."""
        return next(self.iter_mutual_information(np.asarray(weights)[None]))

    def save(self, path: str | os.PathLike, input_block: np.ndarray, **attrs) -> None:
        if self.rows.max(initial=0) >= 2**32:
            raise ValueError("a block holds 2**32 rows or more: counts would overflow uint32")
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs.update({"format": COUNTS_FORMAT, "version": VERSION, "n_codes": self.n_codes,
                             "n_blocks": self.n_blocks, "edges": "full sample", **attrs})
            h5.create_dataset("input_block", data=np.asarray(input_block, dtype=np.int64))
            h5.create_dataset("rows", data=self.rows)
            h5.create_dataset("joint", data=self.joint.astype(np.uint32), compression="gzip", shuffle=True,
                              chunks=(1, *self.joint.shape[1:]))
            h5.create_dataset("marginal_a", data=self.marginal_a.astype(np.uint32))
            h5.create_dataset("marginal_b", data=self.marginal_b.astype(np.uint32))
            h5.create_dataset("dead_a", data=self.dead_a)
            h5.create_dataset("dead_b", data=self.dead_b)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CountBlocks":
        with h5py.File(path, "r") as h5:
            _check_format(h5, path, COUNTS_FORMAT)
            b, n_a, k, n_b, _ = h5["joint"].shape
            out = cls(n_a, n_b, k, b, h5["dead_a"][()], h5["dead_b"][()])
            out.rows = h5["rows"][()]
            out.joint = h5["joint"][()].astype(np.float64)
            out.marginal_a = h5["marginal_a"][()].astype(np.float64)
            out.marginal_b = h5["marginal_b"][()].astype(np.float64)
        return out

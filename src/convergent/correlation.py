"""Pearson correlation between units, streamed in float64 (Li et al. 2016, §2).

:func:`correlation` is the one-shot function for two activation matrices a researcher has;
:class:`StreamingMoments` accumulates the same statistics chunk by chunk so a layer never has to
fit in memory; :func:`joint_layer_statistics` runs one pass over all networks' activations of a
layer at once, which yields every within-net and between-net correlation together.

Units with zero variance (dead ReLUs) get NaN correlations: they are reported, never matched.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a = rng.normal(size=(1000, 3)); b = a @ rng.normal(size=(3, 4))
>>> correlation(a, b).shape
(3, 4)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np

from convergent.activations import check_paired, iter_sample_chunks, layer_attrs
from convergent.integrity import check_finite, open_hdf5
from convergent.outputs import atomic_output
from convergent.progress import progress_callback


def _dead(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    # Relative threshold: a unit constant at c has a float64 std of ~1e-16*c, not exactly 0.
    return std <= 1e-10 * np.abs(mean) + 1e-300


class StreamingMoments:
    """Mean and covariance of the columns of a matrix seen in row chunks, in float64.

    Sums are taken around a shift (the first chunk's mean) to avoid the cancellation of the
    textbook ``E[xx'] - E[x]E[x]'`` when means are large compared to the spread. On ``cuda`` the
    sums live on the GPU (torch, float64); on ``cpu`` numpy does the work and torch is not imported.
    """

    def __init__(self, n_features: int, device: str = "cpu"):
        self.device = str(device)
        self.n = 0
        self.shift = None
        if self.device == "cpu":
            self.sum = np.zeros(n_features)
            self.cross = np.zeros((n_features, n_features))
        else:
            import torch

            self.sum = torch.zeros(n_features, dtype=torch.float64, device=self.device)
            self.cross = torch.zeros(n_features, n_features, dtype=torch.float64, device=self.device)

    def _asarray(self, chunk):
        """A float64 copy, never a view: the shift is subtracted from it in place."""
        if self.device == "cpu":
            return np.array(chunk, dtype=np.float64)
        import torch

        return torch.as_tensor(np.asarray(chunk)).to(self.device, torch.float64, copy=True)

    #: Rows converted to float64 at a time. A whole chunk in float64, then shifted, would hold two
    #: float64 copies of it: at 65,536 rows of 5 x 512 units that is 2.7 GB beside the float32 rows.
    block_rows = 8192

    def update(self, chunk) -> None:
        for start in range(0, len(chunk), self.block_rows):
            x = self._asarray(chunk[start:start + self.block_rows])
            if self.shift is None:
                self.shift = x.mean(0)
            x -= self.shift
            self.n += x.shape[0]
            self.sum += x.sum(0)
            self.cross += x.T @ x

    def _numpy(self, value) -> np.ndarray:
        return value if isinstance(value, np.ndarray) else value.cpu().numpy()

    @property
    def mean(self) -> np.ndarray:
        return self._numpy(self.shift + self.sum / self.n)

    @property
    def cov(self) -> np.ndarray:
        """Population covariance (ddof = 0)."""
        centred = self._numpy(self.sum) / self.n
        return self._numpy(self.cross) / self.n - np.outer(centred, centred)


def cov_to_corr(cov: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlation, std and dead-unit mask from a covariance matrix; dead rows/columns are NaN."""
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    dead = _dead(mean, std)
    safe = np.where(dead, np.nan, std)
    corr = cov / np.outer(safe, safe)
    np.clip(corr, -1.0, 1.0, out=corr)
    live = np.flatnonzero(~dead)
    corr[live, live] = 1.0
    return corr, std, dead


def correlation(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation between the columns of ``x`` and of ``y`` (or of ``x`` with itself).

    ``x``: ``[n_samples, n_x]``, ``y``: ``[n_samples, n_y]`` with paired rows. Returns
    ``[n_x, n_y]``; a column with zero variance gives a NaN row/column.
    """
    x = np.asarray(x, dtype=np.float64)
    joint = x if y is None else np.hstack([x, np.asarray(y, dtype=np.float64)])
    if y is not None and len(y) != len(x):
        raise ValueError(f"x and y must have paired rows; got {len(x)} and {len(y)} rows")
    moments = StreamingMoments(joint.shape[1])
    moments.update(joint)
    corr, _, _ = cov_to_corr(moments.cov, moments.mean)
    return corr if y is None else corr[: x.shape[1], x.shape[1]:]


@dataclass
class PairStats:
    """The blocks of the joint statistics for two networks a and b."""

    corr_aa: np.ndarray
    corr_bb: np.ndarray
    corr_ab: np.ndarray
    cov_aa: np.ndarray
    cov_bb: np.ndarray
    cov_ab: np.ndarray
    mean_a: np.ndarray
    mean_b: np.ndarray
    std_a: np.ndarray
    std_b: np.ndarray
    dead_a: np.ndarray
    dead_b: np.ndarray
    n_samples: int


@dataclass
class LayerStats:
    """Per-network mean/std and the joint covariance/correlation of all networks' units."""

    layer: str
    seeds: np.ndarray
    mean: np.ndarray  # [S, n]
    std: np.ndarray  # [S, n]
    cov: np.ndarray  # [S*n, S*n], seed-major
    corr: np.ndarray  # [S*n, S*n], NaN for dead units
    dead: np.ndarray  # [S, n]
    n_samples: int

    @property
    def units(self) -> int:
        return self.mean.shape[1]

    def _block(self, seed: int) -> slice:
        where = np.flatnonzero(self.seeds == seed)
        if len(where) == 0:
            raise KeyError(f"seed {seed} is not in the statistics of {self.layer} (seeds: {self.seeds.tolist()})")
        i = int(where[0])
        return slice(i * self.units, (i + 1) * self.units)

    def pair(self, a: int, b: int) -> PairStats:
        ia, ib = self._block(a), self._block(b)
        sa, sb = int(np.flatnonzero(self.seeds == a)[0]), int(np.flatnonzero(self.seeds == b)[0])
        return PairStats(
            self.corr[ia, ia], self.corr[ib, ib], self.corr[ia, ib],
            self.cov[ia, ia], self.cov[ib, ib], self.cov[ia, ib],
            self.mean[sa], self.mean[sb], self.std[sa], self.std[sb],
            self.dead[sa], self.dead[sb], self.n_samples,
        )

    def save(self, path: str | os.PathLike) -> None:
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs.update({"layer": self.layer, "n_samples": self.n_samples, "units": self.units})
            for name in ("seeds", "mean", "std", "cov", "corr", "dead"):
                h5.create_dataset(name, data=getattr(self, name))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LayerStats":
        with open_hdf5(path, "statistics file") as h5:
            stats = cls(str(h5.attrs["layer"]), h5["seeds"][()], h5["mean"][()], h5["std"][()],
                        h5["cov"][()], h5["corr"][()], h5["dead"][()], int(h5.attrs["n_samples"]))
        # NaN correlations of dead units are the contract; NaN moments mean non-finite activations
        check_finite(stats.mean, path, stats.layer, " of the means")
        check_finite(stats.std, path, stats.layer, " of the standard deviations")
        return stats


def joint_layer_statistics(paths: list[str | os.PathLike], seeds: list[int], layer: str,
                           chunk_rows: int = 65536, device: str = "cpu",
                           progress=None, blocks=None, row_block: np.ndarray | None = None) -> LayerStats:
    """One streamed pass over every network's activations of ``layer`` (paired rows).

    ``blocks``: a :class:`convergent.blocks.BlockMoments` over the same joint matrix, fed every
    chunk with ``row_block`` (the block of each row, :func:`convergent.blocks.row_blocks`), so
    per-block statistics for bootstrap replicates come from the same read. The returned
    statistics do not depend on it. ``progress``: None (silent), True (a tqdm bar) or
    ``callable(done, total)``, counted in rows.
    """
    check_paired(paths, layer)
    if blocks is not None and row_block is None:
        raise ValueError("block statistics need row_block, the block of each row")
    attrs = layer_attrs(paths[0], layer)
    units, n_rows = int(attrs["shape"][0]), int(attrs["n_samples"])
    report = progress_callback(progress, f"correlate {layer}", unit="row")
    if report is not None:
        report(0, n_rows)
    moments = StreamingMoments(units * len(paths), device)
    streams = [iter_sample_chunks(p, layer, chunk_rows) for p in paths]
    start = 0
    for chunks in zip(*streams):
        joint = np.hstack(chunks)
        moments.update(joint)
        if blocks is not None:
            blocks.update(joint, row_block[start:start + len(joint)])
        start += len(joint)
        if report is not None:
            report(start, n_rows)
        del joint, chunks  # before the next chunk is read: one chunk in memory at a time, not two
    mean, cov = moments.mean, moments.cov
    corr, std, dead = cov_to_corr(cov, mean)
    shape = (len(paths), units)
    return LayerStats(layer, np.asarray(seeds), mean.reshape(shape), std.reshape(shape), cov, corr,
                      dead.reshape(shape), moments.n)

"""Block sufficient statistics: bootstrap replicates over probe inputs without re-reading rows.

Resampling the probe inputs reweights them. A measure that sees the data only through sums over
rows then has, in every replicate, sums that are weighted sums of per-block sums, where a block is
a group of probe inputs with all of their rows. Keeping the per-block sums from one streamed pass
makes a replicate cost ``O(blocks x statistic size)`` instead of ``O(rows x statistic size)``.

What is kept, and what it serves
--------------------------------
* :class:`BlockMoments`: per block the row count, ``sum (z - c)``, ``sum (z - c)(z - c)^T`` of a
  joint matrix of several networks' units (``c``: a shift, the first chunk's mean, as in
  :class:`convergent.correlation.StreamingMoments`) and ``max |z|`` per unit. From it,
  :class:`PairBlocks` gives any replicate's covariances (linear CKA, CCA, SVCCA, PWCCA, Procrustes,
  and the matching correlation: Pearson, then the bipartite matching re-solved per replicate) and
  its uncentered Gram matrix ``Z^T Z`` (Wang et al.'s s(eps), Algorithm 1 from the Gram).
* :class:`convergent.count_blocks.CountBlocks`: per block the joint histograms of every unit
  pair from bin codes, for the plug-in mutual information, with the bin edges fixed once on the
  full sample (a replicate reweights the same binned samples).
* RBF CKA, debiased CKA and RSA need more than these sums (an ``n x n`` kernel, per-row norms,
  per-input RDMs): :func:`row_statistic` resamples the (capped) rows directly. Resampled rows
  repeat: for RSA, copies of one input are never compared with each other (their distance is 0 in
  both nets); debiased CKA counts copies as distinct samples, which shifts its replicates up by
  part of the bias it removes, so prefer ``method="basic"`` for it (it corrects such a shift).

Blocks are a seeded random partition of the probe inputs (:func:`input_blocks`), never of rows:
rows at the positions of one image are not independent, and probe sets can be ordered by class
(ImageFolder), so contiguous runs of inputs would not be random groups.

On disk (``stats/{layer}.blocks.h5``, beside ``stats/{layer}.h5``, whose datasets are untouched)::

    attrs    format "convergent.blocks/moments", version 1, layer, units, n_blocks, block_seed,
             n_rows, n_inputs
    nets         str [K]              networks, in the order of the joint matrix (net-major)
    input_block  int64 [n_inputs]     block of each probe input (probe order)
    rows         int64 [B]            rows per block
    shift        float64 [K*n]        c
    sum          float64 [B, K*n]     sum over the block's rows of (z - c)
    cross        float64 [B, K*n, K*n]   sum of (z - c)(z - c)^T, chunked (1, n, n): one pair's
                                      blocks are read without the rest
    absmax       float64 [B, K*n]     max |z| per unit (a unit is all-zero in a replicate iff 0
                                      in every drawn block)

Size: ``8 B (K n)^2`` bytes per layer (100 blocks of a 5 x 512-unit layer: 5.2 GB), so the
number of blocks is a config choice. Count blocks have their own layout
(:mod:`convergent.count_blocks`).

>>> import numpy as np
>>> from convergent import similarity as sim, statistics as st
>>> rng = np.random.default_rng(0)
>>> image = np.repeat(np.arange(60), 4)                 # 60 probe images x 4 positions
>>> x = rng.normal(size=(240, 5)); y = x @ rng.normal(size=(5, 6)) + rng.normal(size=(240, 6))
>>> blocks = input_blocks(60, 20, seed=0)
>>> pair = PairBlocks.from_rows(x, y, blocks[image], 20)
>>> w = np.bincount(rng.integers(0, 20, 20), minlength=20)         # one bootstrap draw of blocks
>>> rows = resampled_rows(blocks[image], w)
>>> bool(abs(sim.linear_cka_cov(*pair.covariances(w)) - sim.linear_cka(x[rows], y[rows])) < 1e-12)
True
>>> ci = st.bootstrap(st.pairwise([pair_statistic(pair, "linear_cka")], [(0, 1)], n_blocks=20))
>>> ci.over
'inputs'
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import h5py
import numpy as np

from convergent.matching import bipartite_matching, overlap_ratio, semi_matching
from convergent.outputs import atomic_output

__all__ = [
    "input_blocks",
    "blocks_that_fit",
    "row_blocks",
    "resampled_rows",
    "BlockMoments",
    "PairBlocks",
    "pair_statistic",
    "replicates",
    "row_statistic",
    "block_layer_moments",
    "MOMENT_MEASURES",
]

MOMENTS_FORMAT = "convergent.blocks/moments"
COUNTS_FORMAT = "convergent.blocks/counts"
VERSION = 1
#: measures whose replicates come from moment blocks (covariances, or the Gram for ``subspace``)
MOMENT_MEASURES = ("linear_cka", "cca", "svcca", "pwcca", "procrustes", "matching", "semi", "overlap", "subspace")
#: Li et al.'s Table-1 quantities, all from one replicate's correlation matrix
UNIT_MATCHING = ("matching", "semi", "overlap")
#: up to this many blocks, linear CKA replicates use block kernels (B^3 floats per kernel)
KERNEL_BLOCKS = 200


def input_blocks(n_inputs: int, n_blocks: int, seed: int = 0) -> np.ndarray:
    """Block of each probe input: a seeded random partition into ``n_blocks`` groups whose sizes
    differ by at most one (``min(n_blocks, n_inputs)`` blocks).

    >>> np.bincount(input_blocks(10, 3)).tolist()
    [4, 3, 3]
    """
    if n_inputs < 1 or n_blocks < 1:
        raise ValueError(f"need at least one input and one block, got {n_inputs} and {n_blocks}")
    n_blocks = min(n_blocks, n_inputs)
    block = np.empty(n_inputs, dtype=np.int64)
    block[np.random.default_rng([seed, 3]).permutation(n_inputs)] = np.arange(n_inputs) % n_blocks
    return block


def blocks_that_fit(n_features: int, wanted: int, max_bytes: int, minimum: int = 20) -> int | None:
    """How many blocks of moments of ``n_features`` joint features fit in ``max_bytes``
    (``8 B D^2`` bytes): ``wanted`` if they fit, fewer down to ``minimum``, else None (resample
    rows instead). Fewer blocks are fewer, larger resampling units: still a valid bootstrap of
    whole inputs, with coarser replicates.

    >>> blocks_that_fit(640, 100, 2 * 10**9), blocks_that_fit(3072, 100, 2 * 10**9), blocks_that_fit(8192, 100, 10**9)
    (100, 26, None)
    """
    fit = int(max_bytes // (8 * n_features**2))
    return min(wanted, fit) if fit >= minimum else None


def row_blocks(path: str | os.PathLike, layer: str, input_block: np.ndarray) -> np.ndarray:
    """Block of each row of a layer in an activation file: its probe input's block (conv layers:
    ``positions[:, 0]``; one row per input otherwise)."""
    from convergent.activations import layer_attrs, read_positions

    positions = read_positions(path, layer)
    if positions is not None:
        return np.asarray(input_block)[positions[:, 0]]
    n = int(layer_attrs(path, layer)["n_samples"])
    if n != len(input_block):
        raise ValueError(f"{path}: layer {layer!r} has {n} rows but {len(input_block)} probe inputs")
    return np.asarray(input_block).copy()


def resampled_rows(row_block: np.ndarray, block_counts: np.ndarray) -> np.ndarray:
    """Rows of one replicate: every row of each drawn block, repeated as often as it was drawn."""
    counts = np.asarray(block_counts)
    whole = np.rint(counts).astype(np.int64)
    if (whole != counts).any() or (whole < 0).any():
        raise ValueError("resampling rows needs whole, non-negative block counts")
    return np.repeat(np.arange(len(row_block)), whole[np.asarray(row_block)])


#: below this many entries of per-row outer products, a chunk's blocks are summed in one
#: vectorised pass (np.add.reduceat) instead of one small matrix product per block
OUTER_ENTRIES = 1 << 22


def _sorted_blocks(block_of_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row order grouping rows by block, the start of each group in that order, and its block."""
    block = np.asarray(block_of_rows).ravel()
    order = np.argsort(block, kind="stable")
    ordered = block[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(block) else np.zeros(0, int)
    return order, starts, ordered[starts]


def _group_rows(block_of_rows: np.ndarray):
    """(block, row indices) for each block present, blocks in increasing order."""
    order, starts, ids = _sorted_blocks(block_of_rows)
    for b, s, e in zip(ids, starts, np.r_[starts[1:], len(order)]):
        yield int(b), order[s:e]


def _check_format(h5: h5py.File, path, expected: str) -> None:
    found = h5.attrs.get("format")
    if found != expected:
        raise ValueError(f"{path} is not a {expected} file (format attribute: {found!r})")
    if int(h5.attrs.get("version", -1)) > VERSION:
        raise ValueError(f"{path} was written by a newer convergent (version {h5.attrs['version']})")


# --------------------------------------------------------------------------- moments


class BlockMoments:
    """Per-block moments of a joint activation matrix (several networks' units side by side).

    Feed it the same float64 chunks a streamed pass sees, with the block of each row; memory is
    ``8 B D^2`` bytes for D features. ``nets`` names the networks (equal unit counts, net-major).
    """

    def __init__(self, n_features: int, n_blocks: int, nets: Sequence[Hashable] = ("x",)):
        self.nets = tuple(str(n) for n in nets)
        if n_features % len(self.nets):
            raise ValueError(f"{n_features} features do not split into {len(self.nets)} networks")
        self.units = n_features // len(self.nets)
        self.rows = np.zeros(n_blocks, dtype=np.int64)
        self.shift: np.ndarray | None = None
        self.sum = np.zeros((n_blocks, n_features))
        self.cross = np.zeros((n_blocks, n_features, n_features))
        self.absmax = np.zeros((n_blocks, n_features))

    @property
    def n_blocks(self) -> int:
        return len(self.rows)

    def update(self, chunk: np.ndarray, block_of_rows: np.ndarray) -> None:
        raw = np.asarray(chunk, dtype=np.float64)
        if len(block_of_rows) != len(raw):
            raise ValueError(f"one block per row expected: {len(block_of_rows)} blocks for {len(raw)} rows")
        if len(raw) == 0:
            return
        if self.shift is None:
            self.shift = raw.mean(0)
        x = raw - self.shift
        if x.shape[1] ** 2 * len(x) <= OUTER_ENTRIES:  # many small blocks: one pass, no Python loop
            order, starts, ids = _sorted_blocks(block_of_rows)
            xs = x[order]
            self.cross[ids] += np.add.reduceat(xs[:, :, None] * xs[:, None, :], starts, axis=0)
            self.sum[ids] += np.add.reduceat(xs, starts, axis=0)
            self.rows[ids] += np.diff(np.r_[starts, len(xs)])
            self.absmax[ids] = np.maximum(self.absmax[ids], np.maximum.reduceat(np.abs(raw[order]), starts, axis=0))
            return
        for b, rows in _group_rows(block_of_rows):
            xb = x[rows]
            self.cross[b] += xb.T @ xb
            self.sum[b] += xb.sum(0)
            self.rows[b] += len(rows)
            np.maximum(self.absmax[b], np.abs(raw[rows]).max(0), out=self.absmax[b])

    @classmethod
    def from_rows(cls, z: np.ndarray, row_block: np.ndarray, n_blocks: int,
                  nets: Sequence[Hashable] = ("x",)) -> "BlockMoments":
        out = cls(np.shape(z)[1], n_blocks, nets)
        out.update(z, row_block)
        return out

    def _slice(self, net: Hashable) -> slice:
        name = str(net)
        if name not in self.nets:
            raise KeyError(f"network {name!r} is not in these block statistics (networks: {list(self.nets)})")
        i = self.nets.index(name)
        return slice(i * self.units, (i + 1) * self.units)

    def pair(self, a: Hashable, b: Hashable) -> "PairBlocks":
        sa, sb = self._slice(a), self._slice(b)
        return PairBlocks(self.rows, self.shift[sa], self.shift[sb], self.sum[:, sa], self.sum[:, sb],
                          self.cross[:, sa, sa], self.cross[:, sb, sb], self.cross[:, sa, sb],
                          self.absmax[:, sa], self.absmax[:, sb])

    def save(self, path: str | os.PathLike, input_block: np.ndarray, **attrs) -> None:
        """Write the layout in the module docstring atomically; ``attrs`` (layer, block_seed...) are kept."""
        n = self.units
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs.update({"format": MOMENTS_FORMAT, "version": VERSION, "units": n,
                             "n_blocks": self.n_blocks, "n_rows": int(self.rows.sum()),
                             "n_inputs": len(input_block), **attrs})
            h5.create_dataset("nets", data=np.array(self.nets, dtype=h5py.string_dtype()))
            h5.create_dataset("input_block", data=np.asarray(input_block, dtype=np.int64))
            h5.create_dataset("rows", data=self.rows)
            h5.create_dataset("shift", data=self.shift if self.shift is not None else np.zeros(self.sum.shape[1]))
            h5.create_dataset("sum", data=self.sum)
            h5.create_dataset("cross", data=self.cross, chunks=(1, n, n))
            h5.create_dataset("absmax", data=self.absmax)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BlockMoments":
        with h5py.File(path, "r") as h5:
            _check_format(h5, path, MOMENTS_FORMAT)
            nets = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["nets"][()]]
            out = cls(h5["sum"].shape[1], h5["rows"].shape[0], nets)
            out.rows, out.shift, out.sum = h5["rows"][()], h5["shift"][()], h5["sum"][()]
            out.cross, out.absmax = h5["cross"][()], h5["absmax"][()]
        return out

    @staticmethod
    def load_pair(path: str | os.PathLike, a: Hashable, b: Hashable) -> "PairBlocks":
        """One pair's blocks, reading only their chunks of ``cross``."""
        with h5py.File(path, "r") as h5:
            _check_format(h5, path, MOMENTS_FORMAT)
            nets = [s.decode() if isinstance(s, bytes) else str(s) for s in h5["nets"][()]]
            n = int(h5.attrs["units"])

            def part(net):
                if str(net) not in nets:
                    raise KeyError(f"{path}: network {str(net)!r} not stored (networks: {nets})")
                i = nets.index(str(net))
                return slice(i * n, (i + 1) * n)

            sa, sb = part(a), part(b)
            cross = h5["cross"]
            return PairBlocks(h5["rows"][()], h5["shift"][sa], h5["shift"][sb], h5["sum"][:, sa],
                              h5["sum"][:, sb], cross[:, sa, sa], cross[:, sb, sb], cross[:, sa, sb],
                              h5["absmax"][:, sa], h5["absmax"][:, sb])

    @staticmethod
    def read_input_block(path: str | os.PathLike) -> np.ndarray:
        with h5py.File(path, "r") as h5:
            _check_format(h5, path, MOMENTS_FORMAT)
            return h5["input_block"][()]


def _dead(mean: np.ndarray, var: np.ndarray, second: np.ndarray | None = None) -> np.ndarray:
    # convergent.correlation's rule: a unit constant at c has a float64 std of ~1e-16 c, not 0.
    dead = np.sqrt(np.clip(var, 0.0, None)) <= 1e-10 * np.abs(mean) + 1e-300
    if second is not None:
        # var = E[(x - shift)^2] - (E[x] - shift)^2 cancels: a unit constant in the drawn blocks
        # (a ReLU silent on every drawn input, alive elsewhere) keeps a rounding residue of
        # ~1e-16 E[(x - shift)^2], which the rule above can miss (its mean is ~0), and its
        # correlations would be noise. Measured: 160 of 7,000 fc1 matching replicates of the
        # default run moved by up to 0.03 between numpy 2.2 and 2.4.
        dead |= np.clip(var, 0.0, None) <= 1e-12 * second
    return dead


@dataclass
class PairBlocks:
    """Two networks' blocks: X (p units) and Y (q units), ``B`` blocks of probe inputs."""

    rows: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray
    sum_x: np.ndarray
    sum_y: np.ndarray
    cross_xx: np.ndarray
    cross_yy: np.ndarray
    cross_xy: np.ndarray
    absmax_x: np.ndarray
    absmax_y: np.ndarray

    def __post_init__(self):
        # one pair's slices of a joint matrix are strided views; each replicate batch multiplies
        # them as [B, p*q] matrices, which must be contiguous not to be copied every time
        for name in self.__dataclass_fields__:
            setattr(self, name, np.ascontiguousarray(getattr(self, name)))

    @property
    def n_blocks(self) -> int:
        return len(self.rows)

    @classmethod
    def from_rows(cls, x: np.ndarray, y: np.ndarray, row_block: np.ndarray, n_blocks: int) -> "PairBlocks":
        """From paired activation matrices and the block of each row (one pass over the rows)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have paired rows; got {x.shape[0]} and {y.shape[0]}")
        m = BlockMoments.from_rows(np.hstack([x, y]), row_block, n_blocks)
        sx, sy = slice(0, x.shape[1]), slice(x.shape[1], None)
        return cls(m.rows, m.shift[sx], m.shift[sy], m.sum[:, sx], m.sum[:, sy], m.cross[:, sx, sx],
                   m.cross[:, sy, sy], m.cross[:, sx, sy], m.absmax[:, sx], m.absmax[:, sy])

    def _weights(self, weights) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape[-1] != self.n_blocks:
            raise ValueError(f"weights for {w.shape[-1]} blocks; these statistics have {self.n_blocks}")
        return w

    def covariances(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(cov_xx, cov_yy, cov_xy)`` (ddof=0) of the rows a replicate draws, ``weights[b]`` times
        block b: what :func:`convergent.similarity.covariances` gives on those rows. Units constant
        in the replicate get exactly zero rows/columns (so correlations are NaN, as for dead units)."""
        w = self._weights(weights)
        return self._covariances(self._batch_moments(w[None], ("xy", "xx", "yy")), 0)

    def gram(self, weights: np.ndarray) -> np.ndarray:
        """Uncentered Gram matrix ``Z^T Z`` of ``Z = [X Y]`` over the replicate's rows (Wang et al.
        do not center); units that are zero in every drawn block get exactly zero rows/columns."""
        w = self._weights(weights)
        n = w @ self.rows
        c = np.r_[self.shift_x, self.shift_y]
        s = np.r_[w @ self.sum_x, w @ self.sum_y]
        p = len(self.shift_x)
        g = np.empty((len(c), len(c)))
        g[:p, :p] = np.tensordot(w, self.cross_xx, 1)
        g[p:, p:] = np.tensordot(w, self.cross_yy, 1)
        g[:p, p:] = np.tensordot(w, self.cross_xy, 1)
        g[p:, :p] = g[:p, p:].T
        g += np.outer(c, s) + np.outer(s, c) + n * np.outer(c, c)
        zero = np.r_[(w > 0) @ self.absmax_x, (w > 0) @ self.absmax_y] == 0
        g[zero, :] = 0.0
        g[:, zero] = 0.0
        return g

    # ---- many replicates at once -----------------------------------------------------------
    def _batch_moments(self, w: np.ndarray, parts: Sequence[str], buffers: dict | None = None) -> dict:
        """Weighted sums for a batch of replicates ``w`` ``[k, B]``: ``n``, mean offsets ``dx``,
        ``dy``, variances, and the raw products ``T{key} = sum_b w_b S_b`` (``key`` in ``xy``,
        ``xx``, ``yy``) written into ``buffers`` when given: one batch's products fill hundreds of
        MB, and fresh memory every batch costs more in page faults than the product itself."""
        n = w @ self.rows
        dx, dy = (w @ self.sum_x) / n[:, None], (w @ self.sum_y) / n[:, None]
        diag_x = np.einsum("bii->bi", self.cross_xx)
        diag_y = np.einsum("bii->bi", self.cross_yy)
        second_x, second_y = (w @ diag_x) / n[:, None], (w @ diag_y) / n[:, None]
        out = {"n": n, "dx": dx, "dy": dy, "second_x": second_x, "second_y": second_y,
               "var_x": second_x - dx * dx, "var_y": second_y - dy * dy}
        for key in parts:
            cross = {"xy": self.cross_xy, "xx": self.cross_xx, "yy": self.cross_yy}[key]
            flat = cross.reshape(self.n_blocks, -1)
            buf = buffers[key][:len(w)] if buffers is not None else np.empty((len(w), flat.shape[1]))
            np.matmul(w, flat, out=buf)
            out["T" + key] = buf.reshape(len(w), *cross.shape[1:])
        return out

    def _product(self, m: dict, key: str, i: int) -> np.ndarray:
        """Replicate i's covariance block ``T/n - d e'`` (one at a time: it stays in cache)."""
        a, b = ("x", "y") if key == "xy" else (key[0], key[1])
        c = m["T" + key][i] / m["n"][i]
        c -= np.outer(m["d" + a][i], m["d" + b][i])
        return c

    def _batch(self, batch: int | None, full: bool) -> int:
        # replicates per batch: about 2**24 float64 products (128 MB) at once
        p, q = len(self.shift_x), len(self.shift_y)
        size = p * q + (p * p + q * q if full else 0)
        return batch or max(1, (1 << 24) // max(size, 1))

    def _dead(self, m: dict, i: int) -> tuple[np.ndarray, np.ndarray]:
        return (_dead(self.shift_x + m["dx"][i], m["var_x"][i], m["second_x"][i]),
                _dead(self.shift_y + m["dy"][i], m["var_y"][i], m["second_y"][i]))

    def _covariances(self, m: dict, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dead_x, dead_y = self._dead(m, i)
        cxx, cyy, cxy = (self._product(m, key, i) for key in ("xx", "yy", "xy"))
        for c, rows, cols in ((cxx, dead_x, dead_x), (cyy, dead_y, dead_y), (cxy, dead_x, dead_y)):
            c[rows, :] = 0.0
            c[:, cols] = 0.0
        return cxx, cyy, cxy

    def _correlation(self, m: dict, i: int) -> np.ndarray:
        dead_x, dead_y = self._dead(m, i)
        sx = np.where(dead_x, np.nan, np.sqrt(np.clip(m["var_x"][i], 0, None)))
        sy = np.where(dead_y, np.nan, np.sqrt(np.clip(m["var_y"][i], 0, None)))
        corr = self._product(m, "xy", i)
        corr /= np.outer(sx, sy)
        return corr

    def correlations(self, weights: np.ndarray, batch: int | None = None):
        """Between-net Pearson correlation matrix of every replicate (a generator of ``[p, q]``);
        units constant in a replicate get NaN rows/columns, as dead units do."""
        w = np.atleast_2d(self._weights(weights))
        step = self._batch(batch, False)
        buffers = {"xy": np.empty((min(step, len(w)), self.cross_xy[0].size))}
        for r in range(0, len(w), step):
            m = self._batch_moments(w[r:r + step], ("xy",), buffers)
            for i in range(len(m["n"])):
                yield self._correlation(m, i)

    def _kernel(self):
        """Block-level kernels for linear CKA, built once: with the blocks re-centred at the
        full-sample mean (so each replicate's mean offset is only resampling noise and nothing
        cancels), ``||C||^2 = w'Kw / N^2 - 2 M[w, w, w] / N^3 + |d|^2 |e|^2`` for every
        cross-covariance C = T/N - d e' of a replicate, where ``K[b, c] = <S_b, S_c>`` and
        ``M[a, b, c] = s_a' S_b t_c``: B x B and B x B x B arrays instead of p x q per replicate."""
        if getattr(self, "_kernels", None) is None:
            n = self.rows.astype(np.float64)
            delta_x, delta_y = self.sum_x.sum(0) / n.sum(), self.sum_y.sum(0) / n.sum()
            s = self.sum_x - n[:, None] * delta_x
            t = self.sum_y - n[:, None] * delta_y
            kernels = {}
            for key, cross, a, b, da, db in (("xx", self.cross_xx, s, s, delta_x, delta_x),
                                             ("yy", self.cross_yy, t, t, delta_y, delta_y),
                                             ("xy", self.cross_xy, s, t, delta_x, delta_y)):
                # sum (u - c - da)(v - c - db)' per block = S - s' db' - da t'  (s', t' re-centred sums)
                left = np.stack([a, np.broadcast_to(da, a.shape)], axis=2)  # [B, p, 2]
                right = np.stack([np.broadcast_to(db, b.shape), b + n[:, None] * db], axis=2)  # [B, q, 2]
                centred = cross - left @ right.transpose(0, 2, 1)
                flat = centred.reshape(self.n_blocks, -1)
                k = flat @ flat.T
                m = np.matmul(a[None], centred) @ b.T  # [b, a, c] = s_a' S_b t_c
                kernels[key] = (k, np.ascontiguousarray(m.transpose(1, 0, 2)))
            self._kernels = (kernels, s, t)
        return self._kernels

    def linear_cka_kernel(self, weights: np.ndarray) -> np.ndarray:
        """Linear CKA of every replicate from the block kernels (:meth:`_kernel`): cost
        ``B^2 (p + q)^2`` once, then ``B^3`` per replicate, whatever the number of units."""
        w = np.atleast_2d(self._weights(weights))
        (kernels, s, t) = self._kernel()
        n = w @ self.rows
        d, e = (w @ s) / n[:, None], (w @ t) / n[:, None]
        norms = {}
        for key, (left, right) in (("xx", (d, d)), ("yy", (e, e)), ("xy", (d, e))):
            k, m = kernels[key]
            quad = np.einsum("rb,bc,rc->r", w, k, w)
            cubic = np.einsum("rab,ra,rb->r", (w @ m.reshape(self.n_blocks, -1)).reshape(len(w), self.n_blocks,
                              self.n_blocks), w, w)
            norms[key] = quad / n**2 - 2 * cubic / n**3 + (left * left).sum(1) * (right * right).sum(1)
        den = np.sqrt(np.clip(norms["xx"], 0, None) * np.clip(norms["yy"], 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, np.clip(norms["xy"], 0, None) / den, np.nan)

    def measures(self, names: Sequence[str], weights: np.ndarray, options: dict | None = None,
                 batch: int | None = None, threads: int = 1) -> dict[str, np.ndarray]:
        """Several measures (:data:`MOMENT_MEASURES`) on every replicate (rows of ``weights``),
        sharing one weighted sum of the blocks per batch of replicates; ``options[name]`` are a
        measure's keyword arguments (``subspace``: ``epsilon``). ``threads``: bipartite matchings
        solved at once (scipy's solver releases the GIL)."""
        from convergent.similarity import MEASURES

        names, options = list(names), dict(options or {})
        unknown = [n for n in names if n not in MOMENT_MEASURES]
        if unknown:
            raise ValueError(f"{unknown} need more than block moments; resample rows with row_statistic")
        w = np.atleast_2d(self._weights(weights))
        out = {n: np.empty(len(w)) for n in names}
        if "linear_cka" in names and self.n_blocks <= KERNEL_BLOCKS and len(w) >= self.n_blocks:
            out["linear_cka"][:] = self.linear_cka_kernel(w)  # cheaper than per-replicate covariances
            names = [n for n in names if n != "linear_cka"]
        full = [n for n in names if n not in UNIT_MATCHING + ("subspace",)]  # need cov_xx and cov_yy
        unit = [n for n in names if n in UNIT_MATCHING]
        parts = ("xy", "xx", "yy") if full else ("xy",) if unit else ()
        step = self._batch(batch, bool(full))
        sizes = {"xy": self.cross_xy[0].size, "xx": self.cross_xx[0].size, "yy": self.cross_yy[0].size}
        buffers = {key: np.empty((min(step, len(w)), sizes[key])) for key in parts}
        for r in range(0, len(w) if parts else 0, step):
            m = self._batch_moments(w[r:r + step], parts, buffers)
            if "linear_cka" in names:  # ||C_xy||^2 / (||C_xx|| ||C_yy||)
                for i in range(len(m["n"])):
                    num = np.square(self._product(m, "xy", i)).sum()
                    den = np.sqrt(np.square(self._product(m, "xx", i)).sum()
                                  * np.square(self._product(m, "yy", i)).sum())
                    out["linear_cka"][r + i] = num / den if den > 0 else np.nan
            if unit:
                def solve(i, m=m):
                    return _unit_matching(self._correlation(m, i), unit)

                if threads > 1:
                    with ThreadPoolExecutor(threads) as pool:
                        solved = list(pool.map(solve, range(len(m["n"]))))
                else:
                    solved = [solve(i) for i in range(len(m["n"]))]
                for name in unit:
                    out[name][r:r + len(m["n"])] = [values[name] for values in solved]
            for i in range(len(m["n"])):
                covs = None
                for name in full:
                    if name != "linear_cka":
                        covs = covs or self._covariances(m, i)
                        out[name][r + i] = MEASURES[name].cov(*covs, **options.get(name, {}))
        if "subspace" in names:
            eps = float(options.get("subspace", {}).get("epsilon", 0.25))
            out["subspace"][:] = self.subspace_curves(w, [eps])[:, 0]
        return out

    def subspace_curves(self, weights: np.ndarray, eps_grid: Sequence[float], progress=None) -> np.ndarray:
        """Wang et al.'s s(eps) over a grid, ``[R, len(eps_grid)]``, each replicate from its Gram
        matrix (Algorithm 1 once per replicate, reused across the grid). ``progress``: see
        :mod:`convergent.progress` (replicates done of ``R``)."""
        from convergent.progress import progress_callback
        from convergent.subspace import SubspaceProblem

        w = np.atleast_2d(self._weights(weights))
        p = len(self.shift_x)
        report = progress_callback(progress, "s(eps) replicates", unit="replicate")
        out = np.empty((len(w), len(eps_grid)))
        for r, wi in enumerate(w):
            out[r] = SubspaceProblem.from_gram(self.gram(wi), p, device="cpu").similarity_curve(eps_grid)
            if report is not None:
                report(r + 1, len(w))
        return out


def _unit_matching(corr: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Li et al. Table 1 from one correlation matrix: mean bipartite-matching and semi-matching
    correlation and their overlap ratio, as :func:`convergent.matching.summarize_match` has them."""
    def mean(match):
        return float(np.nanmean(match.value)) if match.matched.any() else float("nan")

    match = bipartite_matching(corr) if {"matching", "overlap"} & set(names) else None
    semi = semi_matching(corr) if {"semi", "overlap"} & set(names) else None
    out = {}
    if "matching" in names:
        out["matching"] = mean(match)
    if "semi" in names:
        out["semi"] = mean(semi)
    if "overlap" in names:
        out["overlap"] = overlap_ratio(semi, match)
    return out


def replicates(blocks, measure: str, weights: np.ndarray, **kwargs) -> np.ndarray:
    """``measure`` on every replicate, ``weights`` ``[R, B]`` (block counts), from block statistics.

    Moment blocks (:meth:`PairBlocks.measures`): ``linear_cka`` (vectorised); ``matching``,
    ``semi``, ``overlap`` (Li et al.'s Table 1: Pearson, then the matchings re-solved per
    replicate); ``subspace`` (s(eps) from the Gram; ``epsilon``); ``cca``, ``svcca``, ``pwcca``,
    ``procrustes`` through their ``*_cov`` functions in :mod:`convergent.similarity`. Count blocks
    (:class:`convergent.count_blocks.CountBlocks`): ``mi_matching``, ``mi_semi``. Anything else
    resamples rows: :func:`row_statistic`.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if not isinstance(blocks, PairBlocks):  # count blocks (convergent.count_blocks) know their measures
        return blocks.replicates(measure, w, **kwargs)
    return blocks.measures([measure], w, {measure: kwargs})[measure]


def pair_statistic(blocks, measure: str, **kwargs) -> Callable[[np.ndarray], np.ndarray]:
    """The pair's ``measure`` as a function of block counts ``[k, B] -> [k]``, for
    :func:`convergent.statistics.pairwise` (with ``n_blocks=blocks.n_blocks``).

    Results are remembered per set of draws: the same draws reach a pair again when one layer's
    value, its differences to other layers and its baseline comparison are bootstrapped together.
    """
    allowed = blocks.MEASURES if hasattr(blocks, "MEASURES") else MOMENT_MEASURES
    if measure not in allowed:
        raise ValueError(f"{measure!r} is not one of {allowed}; other measures resample rows with row_statistic")
    return _remembered(lambda block_counts: replicates(blocks, measure, block_counts, **kwargs))


def _remembered(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    memory: dict = {}

    def call(block_counts):
        counts = np.ascontiguousarray(np.atleast_2d(block_counts), dtype=np.float64)
        key = (counts.shape, counts.tobytes())
        if key not in memory:
            memory[key] = np.asarray(fn(counts), dtype=np.float64)
        return memory[key]

    return call


# --------------------------------------------------------------------------- rows


def _rsa_distinct(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> float:
    from convergent import similarity as sim

    dx, dy = sim.rdm(x[rows]), sim.rdm(y[rows])
    copies = rows[:, None] == rows[None, :]
    np.fill_diagonal(copies, False)
    dx[copies] = np.nan  # copies of one input: distance 0 in both nets, not a comparison
    return sim.rsa_rdm(dx, dy)


def row_statistic(x: np.ndarray, y: np.ndarray, row_block: np.ndarray, measure: str | Callable,
                  **kwargs) -> Callable[[np.ndarray], np.ndarray]:
    """A measure recomputed on each replicate's rows, as a function of block counts ``[k, B]``.

    For measures without block statistics (RBF CKA, debiased CKA, RSA, or any ``fn(x, y)``); cap
    ``x``/``y`` first (the interval is then over the capped inputs, like the value). ``rsa``
    leaves the pairs of copies of one input out of the RDM comparison.
    """
    from convergent import similarity as sim

    x, y = np.asarray(x), np.asarray(y)
    row_block = np.asarray(row_block)
    if measure == "rsa":
        def fn(rows):
            return _rsa_distinct(x, y, rows)
    else:
        f = measure if callable(measure) else sim.MEASURES[measure].fn

        def fn(rows):
            return f(x[rows], y[rows], **kwargs)

    return _remembered(lambda block_counts: np.array([fn(resampled_rows(row_block, w))
                                                     for w in np.atleast_2d(block_counts)]))


# --------------------------------------------------------------------------- streamed pass


def block_layer_moments(paths: Sequence[str | os.PathLike], nets: Sequence[Hashable], layer: str,
                        input_block: np.ndarray, chunk_rows: int = 65536, progress=None) -> BlockMoments:
    """One streamed float64 pass over every network's activations of ``layer`` (paired rows),
    keeping per-block moments of the joint matrix (networks side by side, in ``nets`` order)."""
    from convergent.activations import check_paired, iter_sample_chunks, layer_attrs

    check_paired(paths, layer)
    units = int(layer_attrs(paths[0], layer)["shape"][0])
    row_block = row_blocks(paths[0], layer, input_block)
    moments = BlockMoments(units * len(paths), int(np.max(input_block)) + 1, nets)
    start = 0
    for chunks in zip(*[iter_sample_chunks(p, layer, chunk_rows) for p in paths]):
        joint = np.hstack([np.asarray(c, dtype=np.float64) for c in chunks])
        moments.update(joint, row_block[start:start + len(joint)])
        start += len(joint)
        if progress is not None:
            progress.update(len(joint))
    return moments

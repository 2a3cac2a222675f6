"""Mutual information between all unit pairs of two networks (Li et al. 2016, §3.2, footnote 6).

Each unit's activations are discretised into a special bin ``(-inf, 1e-6]`` that holds the ReLU
zeros, plus ``n_bins`` percentile bins that each hold an equal share (5 % for 20 bins) of the
unit's remaining values. Layers whose values can be negative (``signed``: no ReLU floor, e.g.
pre-activation maps, residual streams, GELU outputs) get no special bin: ``zero_threshold=None``
makes the ``n_bins`` percentile bins cover all values (code 0 stays empty). The plug-in estimate (in nats) of every pair's mutual information needs
its joint histogram; for all pairs at once the joint histograms are the blocks of one matrix
product of one-hot bin codes, ``onehot(A).T @ onehot(B)``, computed exactly:

* on a GPU (``device`` ``auto`` with CUDA present, or ``cuda``): torch, float32 (sums of 0/1
  products are exact integers below 2**24, so the samples are chunked to that);
* on CPU, large layers: torch's int8 GEMM with int32 accumulation (~5x faster than float32);
* on CPU, small layers: numpy float32 GEMM, without paying seconds for ``import torch``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a = np.maximum(rng.normal(size=(5000, 3)), 0)
>>> b = np.maximum(a[:, ::-1] + 0.1 * rng.normal(size=(5000, 3)), 0)
>>> mi = mutual_information(a, b, n_samples=None)
>>> mi.shape, [int(i) for i in mi.argmax(axis=1)]
((3, 3), [2, 1, 0])
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import xlogy

from convergent.device import resolve_device
from convergent.progress import progress_callback
from convergent.sampling import sample_rows, seeded_rng

__all__ = [
    "ZERO_THRESHOLD",
    "percentile_edges",
    "bin_codes",
    "joint_counts",
    "mutual_information",
    "mutual_information_from_codes",
]

ZERO_THRESHOLD = 1e-6
# Below this many multiply-adds a numpy float32 GEMM beats importing torch for its int8 GEMM.
TORCH_CPU_WORK = 1e11
FLOAT32_EXACT_ROWS = 2**24 - 1


def _threshold(zero_threshold: float | None) -> float:
    """None (signed layers: no zero bin) is a threshold no value is at or below."""
    return -np.inf if zero_threshold is None else float(zero_threshold)


def percentile_edges(x: np.ndarray, n_bins: int = 20, zero_threshold: float | None = ZERO_THRESHOLD) -> np.ndarray:
    """Inner edges of the ``n_bins`` percentile bins of the values of ``x`` above ``zero_threshold``
    (None: of all values).

    Returns ``n_bins - 1`` non-decreasing edges (``np.quantile``, linear interpolation); empty if
    no value exceeds the threshold. Ties can make edges coincide, leaving some bins empty.
    """
    zero_threshold = _threshold(zero_threshold)
    x = np.asarray(x, dtype=np.float64).ravel()
    above = x[x > zero_threshold]
    if above.size == 0:
        return np.empty(0)
    return np.quantile(above, np.arange(1, n_bins) / n_bins)


def _edge_positions(n: int, m, q):
    """Indices of the order statistics around each quantile and the interpolation fraction.

    The values above the threshold are the last ``m`` of a sorted row of ``n``; the virtual index
    and its fraction are computed within those ``m`` exactly as ``np.quantile`` does.
    """
    virtual = np.maximum(m - 1, 0)[:, None] * q[None, :]
    floor = np.floor(virtual)
    low = np.minimum((n - m)[:, None] + floor.astype(np.int64), n - 1)
    return low, np.minimum(low + 1, n - 1), virtual - floor


def _lerp(lo, hi, frac, where):
    # numpy's quantile _lerp form, so the edges agree with np.quantile bit for bit.
    return where(frac >= 0.5, hi - (hi - lo) * (1 - frac), lo + (hi - lo) * frac)


def _bin_block_numpy(block: np.ndarray, n_bins: int, zero_threshold: float) -> np.ndarray:
    """Codes of one ``[units, n]`` block on CPU (numpy's SIMD sort is several times torch's)."""
    n = block.shape[1]
    q = np.arange(1, n_bins) / n_bins
    above = block > zero_threshold
    ordered = np.sort(block, axis=1)
    low, high, frac = _edge_positions(n, above.sum(axis=1), q)
    edges = _lerp(np.take_along_axis(ordered, low, 1), np.take_along_axis(ordered, high, 1), frac, np.where)
    codes = np.zeros(block.shape, dtype=np.uint8)
    for unit in range(block.shape[0]):
        # side="left" counts the edges strictly below a value: bins are closed on the right.
        codes[unit] = 1 + np.searchsorted(edges[unit], block[unit], side="left")
    codes[~above] = 0
    return codes


def _bin_block_torch(block: np.ndarray, n_bins: int, zero_threshold: float, device: str) -> np.ndarray:
    """The same codes computed by torch on ``device`` (used for GPUs)."""
    import torch

    x = torch.as_tensor(block, device=device)
    n = x.shape[1]
    q = np.arange(1, n_bins) / n_bins
    above = x > zero_threshold
    ordered = x.sort(dim=1).values
    low, high, frac = _edge_positions(n, above.sum(dim=1).cpu().numpy(), q)
    low, high = torch.as_tensor(low, device=device), torch.as_tensor(high, device=device)
    edges = _lerp(ordered.gather(1, low), ordered.gather(1, high), torch.as_tensor(frac, device=device), torch.where)
    inner = torch.searchsorted(edges.contiguous(), x, right=False)
    return torch.where(above, 1 + inner, torch.zeros_like(inner)).to(torch.uint8).cpu().numpy()


def bin_codes(
    x: np.ndarray,
    n_bins: int = 20,
    zero_threshold: float | None = ZERO_THRESHOLD,
    block_units: int = 128,
    device: str = "auto",
    progress=None,
) -> np.ndarray:
    """Bin index of every sample of every unit: ``x`` ``[n_samples, n_units]`` → uint8 codes.

    Code 0 is the special bin ``(-inf, zero_threshold]``; codes ``1..n_bins`` are the percentile
    bins ``(zero_threshold, e_1], (e_1, e_2], ..., (e_{n_bins-1}, inf)`` with the edges of
    :func:`percentile_edges`, so each holds ``1/n_bins`` of the unit's non-zero mass (up to ties).
    ``zero_threshold=None`` (signed layers): no special bin, codes ``1..n_bins`` split all values.
    ``block_units`` units are sorted at once, on the GPU when ``device`` resolves to CUDA.
    ``progress``: None, True (a tqdm bar) or ``callable(done, total)``, counted in unit blocks.
    """
    zero_threshold = _threshold(zero_threshold)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected [n_samples, n_units], got shape {x.shape}")
    if not 1 <= n_bins <= 254:
        raise ValueError("n_bins must be in 1..254 so that codes fit in uint8")
    device = resolve_device(device)
    codes = np.zeros(x.shape, dtype=np.uint8)
    report = progress_callback(progress, "binning units", unit="block")
    n_blocks = -(-x.shape[1] // block_units)
    for done, u0 in enumerate(range(0, x.shape[1], block_units), 1):
        block = np.ascontiguousarray(np.asarray(x[:, u0 : u0 + block_units], dtype=np.float64).T)
        if device == "cpu":
            codes[:, u0 : u0 + block_units] = _bin_block_numpy(block, n_bins, zero_threshold).T
        else:
            codes[:, u0 : u0 + block_units] = _bin_block_torch(block, n_bins, zero_threshold, device).T
        if report is not None:
            report(done, n_blocks)
    return codes


@functools.cache
def _cpu_int_mm_works() -> bool:
    # torch._int_mm is private; older or unusual builds may lack a CPU kernel.
    try:
        import torch

        ones = torch.ones(32, 32, dtype=torch.int8)
        return bool((torch._int_mm(ones, ones) == 32).all())
    except (ImportError, AttributeError, RuntimeError, NotImplementedError):
        return False


class _Numpy:
    """Joint counts with numpy float32 GEMMs (exact: integer sums below 2**24)."""

    def __init__(self, codes_a, codes_b, n_codes):
        self.a, self.b, self.k = codes_a, codes_b, n_codes

    @staticmethod
    def _onehot(codes, k, transposed):
        n, u = codes.shape
        index = codes.astype(np.int64) + np.arange(u) * k
        out = np.zeros((u * k, n) if transposed else (n, u * k), dtype=np.float32)
        if transposed:
            out[index.T, np.arange(n)[None, :]] = 1
        else:
            out[np.arange(n)[:, None], index] = 1
        return out

    def counts(self, i0, i1, j0, j1):
        n = self.a.shape[0]
        total = np.zeros(((i1 - i0) * self.k, (j1 - j0) * self.k), dtype=np.float64)
        for s in range(0, n, FLOAT32_EXACT_ROWS):
            left = self._onehot(self.a[s : s + FLOAT32_EXACT_ROWS, i0:i1], self.k, True)
            right = self._onehot(self.b[s : s + FLOAT32_EXACT_ROWS, j0:j1], self.k, False)
            total += left @ right
        return total

    @staticmethod
    def sum_xlogx(counts, axes):
        return xlogy(counts, counts).sum(axis=axes)

    @staticmethod
    def to_numpy(x):
        return x


class _Torch:
    """Joint counts with torch: int8 GEMM with int32 accumulation on CPU, float32 on CUDA."""

    def __init__(self, codes_a, codes_b, n_codes, device, threads=None):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.torch, self.k, self.device = torch, n_codes, device
        self.a = torch.as_tensor(np.ascontiguousarray(codes_a), device=device)
        self.b = torch.as_tensor(np.ascontiguousarray(codes_b), device=device)
        self.int8 = device == "cpu"
        self.dtype = torch.int8 if self.int8 else torch.float32
        self.chunk = self.a.shape[0] if self.int8 else FLOAT32_EXACT_ROWS
        self._left = None

    def _onehot(self, codes, transposed):
        torch = self.torch
        n, u = codes.shape
        index = codes.long() + torch.arange(u, device=codes.device) * self.k
        if transposed:  # built transposed directly: the left GEMM operand, without a copy
            out = torch.zeros(u * self.k, n, dtype=self.dtype, device=codes.device)
            out.scatter_(0, index.t(), 1)
        else:
            out = torch.zeros(n, u * self.k, dtype=self.dtype, device=codes.device)
            out.scatter_(1, index, 1)
        return out

    def counts(self, i0, i1, j0, j1):
        torch = self.torch
        starts = range(0, self.a.shape[0], self.chunk)
        if self._left is None or self._left[0] != (i0, i1):  # reused across the j blocks
            self._left = ((i0, i1), [self._onehot(self.a[s : s + self.chunk, i0:i1], True) for s in starts])
        total = None
        for left, s in zip(self._left[1], starts):
            right = self._onehot(self.b[s : s + self.chunk, j0:j1], False)
            part = torch._int_mm(left, right) if self.int8 else (left @ right).round()
            part = part.to(torch.float64)
            total = part if total is None else total + part
        return total

    def sum_xlogx(self, counts, axes):
        return self.torch.xlogy(counts, counts).sum(dim=axes)

    @staticmethod
    def to_numpy(x):
        return x.cpu().numpy()


def _engine(codes_a, codes_b, n_codes, device, threads=None):
    work = codes_a.shape[0] * codes_a.shape[1] * codes_b.shape[1] * n_codes**2
    if device == "cuda" or (work >= TORCH_CPU_WORK and _cpu_int_mm_works()):
        return _Torch(codes_a, codes_b, n_codes, device, threads)
    return _Numpy(codes_a, codes_b, n_codes)


def joint_counts(codes_a: np.ndarray, codes_b: np.ndarray, n_codes: int, device: str = "auto") -> np.ndarray:
    """Joint histograms of all unit pairs: int64 ``[n_a, n_codes, n_b, n_codes]``.

    ``out[i, k, j, l]`` counts the samples with ``codes_a[:, i] == k`` and ``codes_b[:, j] == l``.
    Memory grows with ``n_a * n_b * n_codes**2``; :func:`mutual_information_from_codes` works
    block by block instead.
    """
    codes_a, codes_b = np.asarray(codes_a), np.asarray(codes_b)
    if codes_a.shape[0] != codes_b.shape[0]:
        raise ValueError("codes_a and codes_b must have the same number of (paired) samples")
    engine = _engine(codes_a, codes_b, n_codes, resolve_device(device))
    counts = engine.to_numpy(engine.counts(0, codes_a.shape[1], 0, codes_b.shape[1]))
    return np.rint(counts).astype(np.int64).reshape(codes_a.shape[1], n_codes, codes_b.shape[1], n_codes)


def mutual_information_from_codes(
    codes_a: np.ndarray,
    codes_b: np.ndarray,
    n_codes: int,
    block_units: int = 128,
    device: str = "auto",
    threads: int | None = None,
    progress=None,
) -> np.ndarray:
    """Plug-in mutual information (nats) of every pair of columns of two paired code matrices.

    ``MI = log N + (Σ n_kl log n_kl − Σ n_k log n_k − Σ n_l log n_l) / N`` over the joint
    histogram ``n_kl`` of the pair, equal to ``sklearn.metrics.mutual_info_score`` on the two
    columns. Units are processed ``block_units`` at a time on each side, bounding the one-hot
    matrices to ``N * block_units * n_codes`` entries and the joint counts to
    ``(block_units * n_codes)**2``. ``threads`` caps torch's CPU threads where torch is used
    (None: torch's default). ``progress``: None, True (a tqdm bar) or ``callable(done, total)``,
    counted in blocks of unit pairs.
    """
    codes_a, codes_b = np.asarray(codes_a), np.asarray(codes_b)
    n = codes_a.shape[0]
    if n == 0 or codes_b.shape[0] != n:
        raise ValueError(f"need paired samples; got {codes_a.shape[0]} and {codes_b.shape[0]} rows")
    engine = _engine(codes_a, codes_b, n_codes, resolve_device(device), threads)

    def marginal_term(codes):
        counts = np.stack([np.bincount(c, minlength=n_codes) for c in codes.T]).astype(np.float64)
        return xlogy(counts, counts).sum(axis=1)

    h_a, h_b = marginal_term(codes_a), marginal_term(codes_b)
    out = np.empty((codes_a.shape[1], codes_b.shape[1]))
    report = progress_callback(progress, "mutual information", unit="block")
    n_blocks = -(-codes_a.shape[1] // block_units) * -(-codes_b.shape[1] // block_units)
    done = 0
    if report is not None:
        report(0, n_blocks)
    for i0 in range(0, codes_a.shape[1], block_units):
        i1 = min(i0 + block_units, codes_a.shape[1])
        for j0 in range(0, codes_b.shape[1], block_units):
            j1 = min(j0 + block_units, codes_b.shape[1])
            counts = engine.counts(i0, i1, j0, j1).reshape(i1 - i0, n_codes, j1 - j0, n_codes)
            joint = engine.to_numpy(engine.sum_xlogx(counts, (1, 3)))
            out[i0:i1, j0:j1] = math.log(n) + (joint - h_a[i0:i1, None] - h_b[None, j0:j1]) / n
            done += 1
            if report is not None:
                report(done, n_blocks)
    # Rounding can leave -1e-16 where the true value is 0; MI is never negative.
    return np.maximum(out, 0.0)


def mutual_information(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_samples: int | None = 60_000,
    seed: int = 0,
    n_bins: int = 20,
    zero_threshold: float | None = ZERO_THRESHOLD,
    block_units: int = 128,
    device: str = "auto",
    threads: int | None = None,
    progress=None,
) -> np.ndarray:
    """Mutual information (nats) between every unit of ``x`` and every unit of ``y`` (Li §3.2).

    ``x`` ``[n, n_a]`` and ``y`` ``[n, n_b]`` are paired activations (row r of both comes from the
    same image and position). ``n_samples`` random rows (the same for both, drawn with ``seed``;
    None: all rows) are binned per unit by :func:`bin_codes` (footnote 6: 5 % percentile bins plus
    the special bin ``(-inf, 1e-6]``; ``zero_threshold=None`` for signed layers: percentile bins
    only). Units that are constant over those rows (dead units) get NaN
    rows/columns, so that :mod:`convergent.matching` lists them instead of matching them.
    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``; ``threads``: torch's CPU threads.
    ``progress``: None, True (a tqdm bar) or ``callable(done, total)``, counted in unit blocks
    (binning each net's blocks, then every pair of blocks).
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected paired [n, units] arrays, got {x.shape} and {y.shape}")
    device = resolve_device(device)
    rows = sample_rows(x.shape[0], n_samples, seeded_rng(seed))
    xs = np.asarray(x if rows is None else x[rows], dtype=np.float64)
    ys = np.asarray(y if rows is None else y[rows], dtype=np.float64)
    report = progress_callback(progress, "mutual information", unit="block")
    bx, by = -(-xs.shape[1] // block_units), -(-ys.shape[1] // block_units)
    total = bx + by + bx * by

    def stage(offset):  # one count over the three stages
        return None if report is None else (lambda done, _total: report(offset + done, total))

    codes_x = bin_codes(xs, n_bins, zero_threshold, block_units=block_units, device=device, progress=stage(0))
    codes_y = bin_codes(ys, n_bins, zero_threshold, block_units=block_units, device=device, progress=stage(bx))
    mi = mutual_information_from_codes(codes_x, codes_y, n_bins + 1, block_units=block_units, device=device,
                                       threads=threads, progress=stage(bx + by))
    mi[np.ptp(xs, axis=0) == 0, :] = np.nan
    mi[:, np.ptp(ys, axis=0) == 0] = np.nan
    return mi

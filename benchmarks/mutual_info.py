"""Benchmark: all-pairs mutual information (one-hot matrix products) vs a per-pair histogram2d loop.

Li et al. 2016 §3.2 estimate the mutual information of every unit pair of a layer from 60,000
paired samples with 5 % percentile bins plus a zero bin (footnote 6). This script times, in one
run on the same data,

* ``convergent.mutual_information.mutual_information`` on all pairs of two ``units``-unit layers
  (binning included), and
* the straightforward reference: per-unit ``np.quantile`` edges, then for every pair
  ``np.histogram2d`` and the plug-in sum, timed on ``--pairs`` random pairs and extrapolated
  to all ``units**2`` pairs,

and prints both times, their ratio and the largest absolute difference on the sampled pairs.
Targets (issue #3): ≥ 10× faster on 2 CPU cores, equal to 1e-9, under 1 s on a GPU.

    PYTHONPATH=src python benchmarks/mutual_info.py [--units 256 --samples 60000 --pairs 300 --threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from convergent.device import resolve_device
from convergent.mutual_information import ZERO_THRESHOLD, mutual_information, percentile_edges


def synthetic_layers(units: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two paired ReLU layers, B a noisy mixture of A, so that some pairs share information."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(samples, units)).astype(np.float32)
    mix = rng.normal(size=(units, units)).astype(np.float32) / np.sqrt(units)
    mix[np.arange(units), rng.permutation(units)] += 2.0
    b = a @ mix + rng.normal(size=(samples, units)).astype(np.float32)
    return np.maximum(a, 0), np.maximum(b, 0)


def histogram_edges(x: np.ndarray) -> np.ndarray:
    """Full edge vector for np.histogram2d: its bins are [lo, hi), ours (lo, hi]; nextafter bridges them."""
    inner = np.nextafter(np.r_[ZERO_THRESHOLD, percentile_edges(x)], np.inf)
    return np.r_[min(x.min(), ZERO_THRESHOLD) - 1.0, inner, x.max() + 1.0]


def plugin_mi(joint: np.ndarray) -> float:
    p = joint / joint.sum()
    pa, pb = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--pairs", type=int, default=300, help="pairs timed with the reference loop")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the CPU int8 GEMM path; numpy's BLAS follows OMP_NUM_THREADS
    device = resolve_device(args.device)
    a, b = synthetic_layers(args.units, args.samples, args.seed)
    print(f"layer: {args.units} x {args.units} units, {args.samples} paired samples, device {device}, "
          f"{torch.get_num_threads()} CPU threads")

    def run() -> np.ndarray:
        return mutual_information(a, b, n_samples=None, device=device)

    if device == "cuda":
        run()  # the first call pays for the CUDA context and kernel loading
        torch.cuda.synchronize()
    start = time.perf_counter()
    mi = run()
    if device == "cuda":
        torch.cuda.synchronize()
    fast = time.perf_counter() - start

    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    start = time.perf_counter()
    edges_a = [histogram_edges(a64[:, i]) for i in range(args.units)]
    edges_b = [histogram_edges(b64[:, j]) for j in range(args.units)]
    edge_time = time.perf_counter() - start
    rng = np.random.default_rng(args.seed + 1)
    pairs = rng.integers(0, args.units, size=(args.pairs, 2))
    # Include the strongest pairs so that the comparison covers large values, not only noise.
    pairs[: min(8, args.pairs)] = np.c_[np.arange(min(8, args.pairs)), mi[: min(8, args.pairs)].argmax(axis=1)]
    reference = np.empty(len(pairs))
    start = time.perf_counter()
    for k, (i, j) in enumerate(pairs):
        joint, _, _ = np.histogram2d(a64[:, i], b64[:, j], bins=[edges_a[i], edges_b[j]])
        reference[k] = plugin_mi(joint)
    per_pair = (time.perf_counter() - start) / len(pairs)
    slow = edge_time + per_pair * args.units**2

    diff = np.abs(mi[pairs[:, 0], pairs[:, 1]] - reference).max()
    ratio = slow / fast
    print(f"all-pairs one-hot GEMM      : {fast:9.3f} s (measured)")
    print(f"per-pair histogram2d loop   : {slow:9.3f} s (edges {edge_time:.3f} s + {per_pair * 1e3:.3f} ms/pair "
          f"x {args.units**2} pairs, extrapolated from {len(pairs)} pairs)")
    print(f"speed-up                    : {ratio:9.1f} x")
    print(f"max |difference| ({len(pairs)} pairs): {diff:.3e} nats (max MI {np.nanmax(mi):.3f})")
    target = "under 1 s" if device == "cuda" else ">= 10x"
    ok = (fast < 1.0 if device == "cuda" else ratio >= 10) and diff <= 1e-9
    print(f"target ({target}, diff <= 1e-9): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Benchmark: bootstrap replicates of linear CKA and mean matching correlation from block statistics
vs recomputing them from the resampled rows.

One pair of ``units``-unit layers (ReLU activations sharing structure, matching correlation about
0.6 as in Li et al.'s Table 1) over ``rows`` rows = ``images`` probe images x positions, cut into
``blocks`` blocks of whole images. This script times, in one run on the same data,

* the streamed pass that fills the block moments (:func:`convergent.blocks.BlockMoments.update`,
  the work a `correlate`-like pass does once; reported, not part of the bar),
* ``replicates`` bootstrap replicates of both measures from the blocks
  (:meth:`convergent.blocks.PairBlocks.measures`: one weighted sum of the blocks per batch, then
  CKA vectorised and the bipartite matching re-solved per replicate), and
* the reference: each replicate's rows gathered from the raw matrices, covariances recomputed
  (shared by both measures) and the two measures computed by :mod:`convergent.similarity`, timed
  on ``--recompute`` replicates and extrapolated to ``replicates``,

and prints the times, their ratio and the largest difference between the two ways on the
recomputed replicates. Target (issue #12): 1,000 replicates of both at 512 units and 100,000 rows
in <= 30 s on 2 CPU cores.

    PYTHONPATH=src python benchmarks/bootstrap.py [--units 512 --rows 100000 --blocks 100 --replicates 1000 --threads 2]

On a machine shared with busy processes, two BLAS threads can wait on each other for most of
the run (measured: a 100 x 262144 Gram product 40x slower with 2 threads than with 1 at a load
of 10 on 2 cores); ``--threads 1`` then gives the honest upper bound.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from convergent import similarity as sim
from convergent import statistics as st
from convergent.blocks import BlockMoments, input_blocks, resampled_rows


def synthetic_pair(rows: int, units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two ReLU layers driven by shared latent features: B's units are a noisy, partly mixed
    permutation of A's, so unit matches range from strong to absent."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((rows, units))
    mixing = 0.7 * np.eye(units)[rng.permutation(units)] + 0.3 * np.linalg.qr(rng.standard_normal((units, units)))[0]
    x = np.maximum(latent + 0.5 * rng.standard_normal((rows, units)), 0)
    y = np.maximum(latent @ mixing + 0.5 * rng.standard_normal((rows, units)), 0)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--positions", type=int, default=20, help="rows per probe image")
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--recompute", type=int, default=3, help="replicates timed with the reference")
    parser.add_argument("--chunk-rows", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=2,
                        help="cores: BLAS threads, and bipartite matchings solved at once")
    args = parser.parse_args()
    with threadpool_limits(args.threads, user_api="blas"):
        run(args)


def run(args) -> None:

    images = args.rows // args.positions
    image = np.repeat(np.arange(images), args.positions)
    x, y = synthetic_pair(len(image), args.units, seed=0)
    row_block = input_blocks(images, args.blocks, seed=0)[image]
    print(f"{args.threads} thread(s); {args.units} + {args.units} units, {len(image):,} rows "
          f"({images:,} images x {args.positions} positions), {args.blocks} blocks of images, "
          f"{args.replicates} replicates")

    start = time.perf_counter()
    moments = BlockMoments(2 * args.units, args.blocks, ("a", "b"))
    for r in range(0, len(image), args.chunk_rows):
        rows = slice(r, r + args.chunk_rows)
        moments.update(np.hstack([x[rows], y[rows]]), row_block[rows])
    pair = moments.pair("a", "b")
    t_pass = time.perf_counter() - start
    print(f"block pass (once per layer, like the correlate pass): {t_pass:.1f} s, "
          f"{moments.cross.nbytes / 2**20:,.0f} MiB of cross-products")

    draws = st.draw({"pair": ("a", "b")}, args.blocks, args.replicates, seed=0).block_counts
    start = time.perf_counter()
    fast = pair.measures(["linear_cka", "matching"], draws, threads=args.threads)
    t_blocks = time.perf_counter() - start

    start = time.perf_counter()
    slow = {"linear_cka": [], "matching": []}
    for w in draws[:args.recompute]:
        rows = resampled_rows(row_block, w)
        covs = sim.covariances(x[rows], y[rows])
        slow["linear_cka"].append(sim.linear_cka_cov(*covs))
        slow["matching"].append(sim.matching_correlation_cov(*covs))
    t_rows = (time.perf_counter() - start) / args.recompute * args.replicates

    diff = max(np.max(np.abs(np.array(slow[k]) - fast[k][:args.recompute])) for k in slow)
    full = pair.measures(["linear_cka", "matching"], np.ones((1, args.blocks)))
    print(f"estimates: linear CKA {full['linear_cka'][0]:.4f}, matching {full['matching'][0]:.4f}; "
          f"95% percentile intervals [{np.quantile(fast['linear_cka'], 0.025):.4f}, "
          f"{np.quantile(fast['linear_cka'], 0.975):.4f}] and [{np.quantile(fast['matching'], 0.025):.4f}, "
          f"{np.quantile(fast['matching'], 0.975):.4f}]")
    print(f"replicates from blocks:       {t_blocks:8.1f} s")
    print(f"recomputed from rows (extr.): {t_rows:8.1f} s  ({args.recompute} replicates timed)")
    print(f"speed-up: {t_rows / t_blocks:.0f}x; largest difference {diff:.1e}; "
          f"bar: <= 30 s on 2 cores -> {'met' if t_blocks <= 30 else 'NOT met'}")
    a = np.random.default_rng(1).standard_normal((2048, 2048))
    start = time.perf_counter()
    a @ a
    print(f"(this machine during the run: a 2048^2 float64 matrix product at "
          f"{2 * 2048**3 / (time.perf_counter() - start) / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()

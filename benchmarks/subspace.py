"""Fast (Gram, rank-one updates) vs. reference (least squares) subspace matching, one run.

    PYTHONPATH=src python benchmarks/subspace.py            # the issue's sizes
    PYTHONPATH=src python benchmarks/subspace.py --quick    # a smoke run in seconds

Prints, for Algorithm 1 (n units per net, d samples) and for Algorithm 2 over every neuron
(smaller n), the reference time, the fast time, their ratio, and whether the outputs are
identical; and, when a GPU is present, the time to find all simple matches of a 512+512-unit
layer. Inputs are planted shared subspaces (``convergent.subspace_testing.planted_pair``) with
per-block noise drawn around ε, so Algorithm 1 needs several passes and Algorithm 2 real
cascades; the closest decision to the threshold is printed, since identity is only promised
for decisions farther from it than float64 Gram precision.
Bars (issue #5): >= 30x for Algorithm 1, >= 100x for Algorithm 2 on 2 CPU cores; all simple
matches of 512+512 units under 60 s on a GPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from convergent.subspace import SubspaceProblem
from convergent.subspace_testing import Margin, planted_pair, reference_max_match, reference_min_match


def layer(d: int, n: int, eps: float, seed: int):
    """n X units and n Y units: planted blocks (sizes 1-5, noise around ε), broken blocks and
    private units, about half of each net in blocks that survive."""
    rng = np.random.default_rng(seed)
    blocks, broken, used = [], [], 0
    while used < 0.75 * n:
        k = int(rng.integers(1, 6))
        blocks.append(k)
        used += k
    while used < 0.85 * n:
        k = int(rng.integers(2, 5))
        broken.append(k)
        used += k
    private_x = n - used
    private_y = n - (used - len(broken))
    noise = rng.uniform(0.2 * eps, 1.6 * eps, len(blocks))
    X, Y, _ = planted_pair(d, blocks, broken=broken, private_x=private_x, private_y=private_y,
                           noise=noise, seed=seed)
    assert X.shape[1] == n and Y.shape[1] == n
    return X, Y


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n1", type=int, default=256, help="units per net, Algorithm 1")
    ap.add_argument("--d1", type=int, default=10_000, help="samples, Algorithm 1")
    ap.add_argument("--n2", type=int, default=64, help="units per net, Algorithm 2")
    ap.add_argument("--d2", type=int, default=500, help="samples, Algorithm 2")
    ap.add_argument("--eps", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    a = ap.parse_args()
    if a.quick:
        a.n1, a.d1, a.n2, a.d2 = 48, 1000, 24, 200
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda={torch.cuda.is_available()}, device={a.device}, eps={a.eps}")

    # one-time library start-up (LAPACK, torch kernels) is not what we measure
    Xw, Yw = layer(100, 12, a.eps, a.seed)
    SubspaceProblem(Xw, Yw, device=a.device).min_matches(None, a.eps)
    reference_min_match(Xw, Yw, ("x", 0), a.eps)

    # Algorithm 1
    X, Y = layer(a.d1, a.n1, a.eps, a.seed)
    mg = Margin()
    ref, t_ref = timed(lambda: reference_max_match(X, Y, a.eps, margin=mg))
    fast, t_fast = timed(lambda: SubspaceProblem(X, Y, device=a.device).max_match(a.eps))
    same = fast.match == ref
    print(f"Algorithm 1  n={a.n1}+{a.n1} d={a.d1}: reference {t_ref:.2f} s "
          f"({mg.solves} lstsq), fast {t_fast:.3f} s, ratio {t_ref / t_fast:.0f}x, "
          f"identical={same}, |X*|+|Y*|={fast.match.size}, closest decision {mg.closest:.1e}")

    # Algorithm 2 over every v (index order, as printed in the paper)
    X, Y = layer(a.d2, a.n2, a.eps, a.seed + 1)
    vs = [("x", i) for i in range(a.n2)] + [("y", j) for j in range(a.n2)]
    mg = Margin()
    ref, t_ref = timed(lambda: [reference_min_match(X, Y, v, a.eps, margin=mg) for v in vs])
    fast, t_fast = timed(lambda: SubspaceProblem(X, Y, device=a.device).min_matches(
        vs, a.eps, order="index"))
    same = fast == ref
    found = sum(m is not None for m in fast)
    print(f"Algorithm 2  n={a.n2}+{a.n2} d={a.d2}, all {len(vs)} v: reference {t_ref:.2f} s "
          f"({mg.solves} lstsq), fast {t_fast:.3f} s, ratio {t_ref / t_fast:.0f}x, "
          f"identical={same}, {found} v-minimal matches "
          f"(sizes {sorted({m.size for m in fast if m is not None})}), "
          f"closest decision {mg.closest:.1e}")

    if torch.cuda.is_available() or a.device != "auto":
        X, Y = layer(10_000, 512, a.eps, a.seed + 2)
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        sm, t = timed(lambda: SubspaceProblem(X, Y, device=a.device).simple_matches(a.eps))
        print(f"simple matches 512+512 d=10000 on {a.device}: {t:.1f} s, "
              f"{len(sm.matches)} distinct, max match {sm.max_match.match.size}")
    else:
        print("simple matches 512+512: skipped (no GPU)")


if __name__ == "__main__":
    main()

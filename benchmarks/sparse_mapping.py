"""Benchmark: Table 2's decay grid solved from Gram matrices, all units of net B at once
(`convergent.sparse_mapping`), against scikit-learn's `Lasso` fitted per unit of net B on the
standardised activations (the straightforward reference), both timed in this run.

    PYTHONPATH=src python benchmarks/sparse_mapping.py [--samples 20000] [--units 96]

Prints both times, their ratio and the largest coefficient difference (both solvers stop at
the same duality-gap tolerance, so they agree to about that tolerance, not to round-off).
"""

import argparse
import time

import numpy as np
from sklearn.linear_model import Lasso, LinearRegression

from convergent.sparse_mapping import Moments, decay_grid, lasso_path_gram


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--units", type=int, default=96, help="units per net (conv1 of CaffeNet: 96)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, p = args.samples, args.units
    mix = np.eye(p) + 0.3 * rng.standard_normal((p, p))
    x = np.maximum(rng.standard_normal((n, p)) @ mix, 0)
    y = np.maximum(x @ (rng.standard_normal((p, p)) * (rng.random((p, p)) < 0.05))
                   + rng.standard_normal((n, p)), 0)
    alphas = [d * p for d in decay_grid()]  # the default decay_scale: n_targets

    t0 = time.perf_counter()
    mo = Moments.of(x, y)
    sx, sy = mo.std()
    g = mo.standardized(mo.mean_x, sx, mo.mean_y, sy)
    ours = lasso_path_gram(g.xx, g.xy, alphas, yy=g.yy_diag, tol=1e-4)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    xs, ys = (x - x.mean(0)) / sx, (y - y.mean(0)) / sy
    ref = []
    for a in alphas:
        if a == 0:
            ref.append(LinearRegression(fit_intercept=False).fit(xs, ys).coef_.T)
            continue
        # one fit per unit and decay at sklearn's default tolerance (both stop at gap < 1e-4)
        ref.append(np.stack([Lasso(alpha=a, fit_intercept=False, tol=1e-4).fit(xs, ys[:, j]).coef_
                             for j in range(p)], axis=1))
    t_ref = time.perf_counter() - t0
    diff = max(np.abs(o.coef - r).max() for o, r in zip(ours, ref))
    print(f"samples={n} units={p} decays={len(alphas)}")
    print(f"gram, all units at once: {t_ours:.3f} s")
    print(f"sklearn Lasso per unit:  {t_ref:.3f} s")
    print(f"ratio (sklearn / gram):  {t_ref / t_ours:.1f}x   max |coef diff| = {diff:.2e}")


if __name__ == "__main__":
    main()

"""Wang et al. 2018 §5 on one layer of two networks, as the pipeline runs it: s(ε) over an ε grid,
averaged over draws of ``d`` paired rows, and simple matches on the first draw; and s(ε) as ``d``
grows (how many rows a layer needs before s(ε) measures the networks rather than the sample).

The algorithms are :mod:`convergent.subspace`; the records and files :mod:`convergent.subspace_results`.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from convergent.sampling import sample_rows, seeded_rng
from convergent.subspace import DEFAULT_ATOL, EPS_GRID, SubspaceProblem
from convergent.subspace_results import PairResult
from convergent.subspace_simple import progress_callback

#: subspace matches need d well above n_x + n_y rows: below this many rows per live unit s(ε)
#: is inflated by the sample (docs/subspace.md, "How many rows"), so the result is flagged and
#: simple matches are not searched
MIN_ROWS_PER_UNIT = 8.0


class UndersampledWarning(UserWarning):
    """Too few rows for the number of units: subspace matches are inflated by the sample."""


def row_draws(n_rows: int, size: int | None, repeats: int, seed: int, layer: str
              ) -> list[np.ndarray | None]:
    """Rows of each repeat: ``repeats`` sorted draws of ``size`` rows without replacement, a
    function of the layer's name and ``seed`` only, so every pair of networks sees the same
    rows. ``[None]`` (one repeat of all rows) when ``size`` is None or covers every row.

    >>> [len(r) for r in row_draws(10, 3, 2, seed=0, layer="conv1")], row_draws(10, 20, 2, 0, "fc")
    ([3, 3], [None])
    """
    rng = seeded_rng(seed, layer)
    first = sample_rows(n_rows, size, rng)
    if first is None:
        return [None]
    return [first] + [sample_rows(n_rows, size, rng) for _ in range(repeats - 1)]


def compare_layer(X, Y, *, layer: str, a: str = "a", b: str = "b", kind: str = "conv",
                  eps_grid: Sequence[float] = EPS_GRID, sample_size: int | None = 10_000,
                  repeats: int = 16, seed: int = 0, simple_eps: Sequence[float] = (),
                  restarts: int = 1, min_rows_per_unit: float = MIN_ROWS_PER_UNIT,
                  device="auto", atol: float = DEFAULT_ATOL, progress=None, workers: int = 1) -> PairResult:
    """Wang §5 for one layer of two networks: s(ε) over the grid, averaged over ``repeats``
    draws of ``sample_size`` rows for conv layers (all rows for fc layers, or when there are
    fewer), and simple matches by randomized Algorithm 2 (``restarts`` runs per neuron, §5.2)
    on the first draw for each ε in ``simple_eps``.

    With d rows and n_x + n_y live units, spans of that many vectors in a space of barely more
    dimensions match almost anything: below ``min_rows_per_unit`` rows per unit the result is
    flagged (``PairResult.undersampled``), a warning says so, and simple matches are skipped.

    ``X``/``Y``: ``[n_rows, n_units]`` activations with paired rows (all positions of a conv
    layer as rows). ``progress``: None, True (tqdm bars) or ``callable(stage, done, total)``,
    called as repeats and Algorithm-2 runs finish. ``workers``: processes that share the
    simple-match runs (the same matches for any number).
    """
    X, Y = np.asarray(X), np.asarray(Y)
    eps = np.asarray([float(e) for e in eps_grid])
    draws = row_draws(len(X), None if kind == "fc" else sample_size, repeats, seed, layer)
    sim = np.zeros((len(draws), len(eps)))
    mx = np.zeros((len(draws), len(eps), X.shape[1]), bool)
    my = np.zeros((len(draws), len(eps), Y.shape[1]), bool)
    dx = np.zeros(len(draws), int)
    dy = np.zeros(len(draws), int)
    simple = {}
    report = _stage_progress(progress, "s(eps), draws of rows")
    if report is not None:
        report(0, len(draws))
    for r, rows in enumerate(draws):
        P = SubspaceProblem(X if rows is None else X[rows], Y if rows is None else Y[rows],
                            device=device, atol=atol)
        sim[r] = P.similarity_curve(eps)
        for e, ep in enumerate(eps):
            m = P.max_match(ep)
            mx[r, e, list(m.x)] = True
            my[r, e, list(m.y)] = True
        dx[r], dy[r] = len(P.dropped_x), len(P.dropped_y)
        if report is not None:
            report(r + 1, len(draws))
        if r > 0:
            continue
        d = len(X) if rows is None else len(rows)
        if d < min_rows_per_unit * (P.nx + P.ny):
            warnings.warn(
                f"{layer} {a}-{b}: d = {d} rows for {P.nx} + {P.ny} live units "
                f"({d / max(P.nx + P.ny, 1):.1f} per unit, below {min_rows_per_unit:g}): "
                f"s(eps) is inflated by the sample"
                + ("; simple matches skipped" if len(simple_eps) else ""),
                UndersampledWarning, stacklevel=2)
        else:
            for ep in simple_eps:
                size = P.max_match(float(ep)).match.size
                stage = (f"simple matches at eps={float(ep):g}, Algorithm 2 runs ({size} neurons"
                         f" x {restarts} restarts)")
                sm = P.simple_matches(float(ep), restarts=restarts, seed=seed,
                                      progress=_stage_progress(progress, stage), workers=workers)
                xs = np.zeros((len(sm.matches), X.shape[1]), bool)
                ys = np.zeros((len(sm.matches), Y.shape[1]), bool)
                for k, m in enumerate(sm.matches):
                    xs[k, list(m.x)] = True
                    ys[k, list(m.y)] = True
                simple[float(ep)] = (xs, ys, np.asarray(sm.counts, int))
    used = len(X) if draws[0] is None else len(draws[0])
    return PairResult(layer, str(a), str(b), kind, len(X), used, eps, sim, mx, my, dx, dy,
                      simple, restarts, float(min_rows_per_unit))


def _stage_progress(progress, stage: str):
    """``progress`` of ``compare_layer`` (None, True or ``callable(stage, done, total)``) as
    ``callable(done, total)`` for one stage."""
    if progress is None or progress is False or progress is True:
        return progress_callback(progress, stage)
    return lambda done, total: progress(stage, done, total)


def sample_size_curve(X, Y, sizes: Sequence[int | None], *, layer: str,
                      eps_grid: Sequence[float] = EPS_GRID, repeats: int = 16, seed: int = 0,
                      device="auto", atol: float = DEFAULT_ATOL, progress=None):
    """s(ε) as the number of rows d grows (``None``: all rows), mean and spread over repeats.

    With d near the number of units, almost any vector is close to the span of the other
    network's units and s(ε) tends to 1 whatever the networks learned; the curve shows from
    which d on s(ε) measures the networks rather than the sample. Returns a DataFrame with
    columns ``d, eps, mean, std, repeats``. ``progress``: None, True (a tqdm bar) or
    ``callable(done, total)``, counted in draws of rows over all sizes.
    """
    import pandas as pd

    X, Y = np.asarray(X), np.asarray(Y)
    out = []
    plan = [row_draws(len(X), size, repeats, seed, layer) for size in sizes]
    report = progress_callback(progress, "s(eps) vs d, draws of rows")
    total, done = sum(len(draws) for draws in plan), 0
    if report is not None:
        report(0, total)
    for draws in plan:
        curves = []
        for r in draws:
            curves.append(SubspaceProblem(X if r is None else X[r], Y if r is None else Y[r],
                                          device=device, atol=atol).similarity_curve(eps_grid))
            done += 1
            if report is not None:
                report(done, total)
        s = np.array(curves)
        d = len(X) if draws[0] is None else len(draws[0])
        for e, ep in enumerate(eps_grid):
            out.append({"d": d, "eps": float(ep), "mean": s[:, e].mean(),
                        "std": s[:, e].std(), "repeats": len(draws)})
    return pd.DataFrame(out)

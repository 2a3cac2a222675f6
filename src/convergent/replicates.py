"""Per-layer bootstrap replicates and permutation nulls, stored for the tables to combine.

One job per layer reads every network's activations of the layer once, keeps per-block moments of
each pair in memory (:class:`convergent.blocks.PairBlocks`: a replicate over probe inputs is a
weighted sum of blocks) and evaluates each pair's measures at the block draws that
:func:`convergent.statistics.bootstrap` will make with the same ``seed``, ``replicates`` and number
of blocks. Only those values are written (``R`` floats per pair and measure), never the blocks:
the default experiment's block moments would take ~455 MB on disk, its replicates take kilobytes.
The table jobs then rebuild every interval over seeds *and* inputs with
:func:`convergent.statistics.stored`, paired across layers and across trained and untrained pairs
(the draws of blocks do not depend on the networks or the layer).

The same job runs the permutation test of the first trained pair (whole probe inputs shuffled,
:func:`convergent.significance.permutation_test`) on a capped number of inputs.

On disk (``statistics/{layer}.h5``)::

    attrs     layer, seed, replicates, n_blocks (0: inputs not resampled), n_inputs, units,
              block_note (why inputs are not resampled, or ""), permutation_pair, permutation_inputs
    pairs     str [P]          "seed0-seed1", "seed0-untrained100", ...
    measures  str [M]
    estimate  float64 [M, P]   on every row once
    replicates float64 [M, P, R]   at draws[r]
    jackknife float64 [M, P, B]    block b left out (BCa)
    draws     int64 [R, B]      block counts of each replicate
    input_block int64 [n_inputs]
    permutation/{measure}  float64 [n]  null values; attrs observed, p_value, permutations

>>> # see tests/test_replicates.py for a full example on synthetic activation files
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import h5py
import numpy as np

from convergent import blocks as bl
from convergent import statistics as st
from convergent.outputs import atomic_output
from convergent.progress import RateLog

__all__ = ["INPUT_MEASURES", "LayerReplicates", "layer_replicates", "pair_name", "permutation_statistic",
           "subspace_measure"]

#: measures whose replicates come from block moments cheaply (Li et al.'s Table 1 and linear CKA)
INPUT_MEASURES = ("matching", "semi", "overlap", "linear_cka")
FORMAT = "convergent.replicates"
#: stored name of Wang et al.'s s(eps) at one eps: ``subspace@0.25``
SUBSPACE_PREFIX = "subspace@"


def subspace_measure(eps: float) -> str:
    """The stored measure name of s(``eps``)."""
    return f"{SUBSPACE_PREFIX}{float(eps):g}"


def pair_name(a: str, b: str) -> str:
    return f"{a}-{b}"


@dataclass
class LayerReplicates:
    """One layer's stored replicates (the module docstring's layout)."""

    layer: str
    seed: int
    replicates: int
    n_blocks: int
    pairs: list[str]
    measures: list[str]
    estimate: np.ndarray
    values: np.ndarray
    jackknife: np.ndarray
    draws: np.ndarray
    input_block: np.ndarray
    block_note: str = ""
    permutation: dict = field(default_factory=dict)  # measure -> dict(observed, p_value, permutations, null)
    permutation_pair: str = ""
    permutation_inputs: int = 0

    @property
    def resampled_inputs(self) -> bool:
        return self.n_blocks >= 2

    def pair_statistic(self, measure: str, a: str, b: str) -> Callable[[np.ndarray], np.ndarray]:
        """Pair (a, b)'s ``measure`` as a function of block counts, for :func:`statistics.pairwise`."""
        m, p = self.measures.index(measure), self.pairs.index(pair_name(a, b))
        jackknife = self.jackknife[m, p]
        return st.stored(self.estimate[m, p], self.draws, self.values[m, p],
                         jackknife if np.isfinite(jackknife).all() else None)

    def has(self, measure: str, a: str, b: str) -> bool:
        """Whether pair (a, b) has replicates of ``measure`` (baseline pairs keep fewer measures)."""
        if measure not in self.measures or pair_name(a, b) not in self.pairs:
            return False
        return bool(np.isfinite(self.values[self.measures.index(measure), self.pairs.index(pair_name(a, b))]).any())

    def value(self, measure: str, a: str, b: str) -> float:
        return float(self.estimate[self.measures.index(measure), self.pairs.index(pair_name(a, b))])

    @classmethod
    def not_resampled(cls, layer: str, seed: int, replicates: int, pairs: Sequence[str], n_inputs: int,
                      note: str) -> "LayerReplicates":
        """A layer's file with no measures and no draws over inputs: ``note`` says why, and the
        tables read it as intervals over seeds only."""
        P = len(pairs)
        return cls(layer, seed, replicates, 0, list(pairs), [], np.empty((0, P)), np.empty((0, P, replicates)),
                   np.empty((0, P, 1)), np.ones((replicates, 1), np.int64), np.zeros(n_inputs, np.int64), note)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs.update({"format": FORMAT, "layer": self.layer, "seed": self.seed,
                             "replicates": self.replicates, "n_blocks": self.n_blocks,
                             "n_inputs": len(self.input_block), "block_note": self.block_note,
                             "permutation_pair": self.permutation_pair,
                             "permutation_inputs": self.permutation_inputs})
            h5.create_dataset("pairs", data=np.array(self.pairs, dtype=h5py.string_dtype()))
            h5.create_dataset("measures", data=np.array(self.measures, dtype=h5py.string_dtype()))
            for name in ("estimate", "values", "jackknife", "draws", "input_block"):
                h5.create_dataset(name, data=getattr(self, name))
            for measure, test in self.permutation.items():
                d = h5.create_dataset(f"permutation/{measure}", data=test["null"])
                d.attrs.update({k: test[k] for k in ("observed", "p_value", "permutations")})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LayerReplicates":
        def text(values):
            return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != FORMAT:
                raise ValueError(f"{path} is not a {FORMAT} file")
            at = h5.attrs
            perm = {m: {"null": d[()], **{k: d.attrs[k] for k in ("observed", "p_value", "permutations")}}
                    for m, d in h5.get("permutation", {}).items()}
            return cls(str(at["layer"]), int(at["seed"]), int(at["replicates"]), int(at["n_blocks"]),
                       text(h5["pairs"][()]), text(h5["measures"][()]), h5["estimate"][()], h5["values"][()],
                       h5["jackknife"][()], h5["draws"][()], h5["input_block"][()], str(at["block_note"]),
                       perm, str(at["permutation_pair"]), int(at["permutation_inputs"]))


def permutation_statistic(measure: str, x: np.ndarray, y: np.ndarray):
    """``(x', y', fn)`` with ``fn(x', y'[rows]) == measure(x, y[rows])`` for every row permutation,
    where the row-invariant work is done once: ``x'``, ``y'`` standardized (matching) or centred
    (linear CKA) columns, so a permutation costs one ``p x q`` product instead of the full
    ``(p + q)^2`` covariance (measured 17 -> 2 ms at 4,000 rows x 64 units)."""
    from convergent.matching import bipartite_matching

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    n = len(x)
    if measure == "matching":
        sx, sy = np.sqrt((xc * xc).mean(0)), np.sqrt((yc * yc).mean(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            xs = np.where(sx > 0, xc / sx, np.nan)  # dead units: NaN rows of the correlation
            ys = np.where(sy > 0, yc / sy, np.nan)

        def matching(a, b):
            value = bipartite_matching(a.T @ b / n).value
            return float(np.nanmean(value)) if np.isfinite(value).any() else float("nan")

        return xs, ys, matching
    if measure == "linear_cka":
        den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)

        def cka(a, b):
            return float(np.square(a.T @ b).sum() / den) if den > 0 else float("nan")

        return xc, yc, cka
    raise ValueError(f"no permutation statistic for {measure!r}; allowed: matching, linear_cka")


def _progress(log, message):
    if log is not None:
        log(message)


def layer_replicates(paths: dict[str, str | os.PathLike], pairs: Sequence[tuple[str, str]], layer: str,
                     cfg: dict, measures: Sequence[str] = INPUT_MEASURES,
                     baseline_pairs: Sequence[tuple[str, str]] = (),
                     baseline_measures: Sequence[str] = ("matching", "linear_cka"),
                     permutation_pair: tuple[str, str] | None = None, threads: int = 1,
                     log: Callable[[str], None] | None = print,
                     subspace_rows: Sequence[np.ndarray | None] | None = None) -> LayerReplicates:
    """Replicates of ``measures`` for every pair of networks (``paths``: network -> activation
    file) over the block draws of ``cfg`` (the `statistics` section: ``seed``, ``replicates``,
    ``blocks``, ``max_block_bytes``, ``permutations``, ``permutation_inputs``).

    ``baseline_pairs`` (a trained network vs an untrained one) get ``baseline_measures`` only:
    the untrained series and the trained-vs-untrained test need no more, and each bipartite
    matching re-solved per replicate costs milliseconds. Their other measures are NaN.

    ``subspace@<eps>`` measures are Wang et al.'s s(eps) as the `subspace` rule computes it: the
    mean over ``subspace_rows`` (each repeat's rows, :func:`convergent.subspace_layers.row_draws`;
    None or ``[None]``: all rows) of s(eps) on the repeat's rows, each replicate weighting a row
    by the count of its input's block, so the estimate is the rule's own number.

    A layer whose pair blocks (``8 B (p + q)^2`` bytes) do not fit ``max_block_bytes`` even at 20
    blocks keeps no replicates over inputs (``n_blocks = 0``, ``block_note`` says why): its
    intervals are then over seeds only.
    """
    from convergent.activations import check_paired, layer_attrs, read_image_index, read_samples

    unknown = [m for m in measures if m not in bl.MOMENT_MEASURES and not m.startswith(SUBSPACE_PREFIX)]
    if unknown:
        raise ValueError(f"statistics: measures {unknown} have no block replicates; allowed: {bl.MOMENT_MEASURES}"
                         f" and {SUBSPACE_PREFIX}<eps>")
    baseline_pairs = [tuple(p) for p in baseline_pairs]
    pairs = [tuple(p) for p in pairs] + [p for p in baseline_pairs if tuple(p) not in set(map(tuple, pairs))]
    nets = list(dict.fromkeys(n for pair in pairs for n in pair))
    files = [paths[n] for n in nets]
    check_paired(files, layer)
    n_inputs = len(read_image_index(files[0]))
    units = int(layer_attrs(files[0], layer)["shape"][0])
    seed, R = int(cfg["seed"]), int(cfg["replicates"])
    wanted = min(int(cfg["blocks"]), n_inputs)
    fit = bl.blocks_that_fit(2 * units, wanted, int(cfg["max_block_bytes"]), minimum=min(20, wanted))
    note = ""
    if fit is None or fit < 2:
        note = (f"pair blocks of {2 * units} units exceed statistics.max_block_bytes="
                f"{cfg['max_block_bytes']}: inputs not resampled")
        n_blocks = 0
    else:
        n_blocks = fit
    input_block = bl.input_blocks(n_inputs, max(n_blocks, 1), seed=seed)
    row_block = bl.row_blocks(files[0], layer, input_block)
    block_of_row = row_block if n_blocks else np.zeros(len(row_block), int)  # one block: inputs not resampled
    acts = {n: read_samples(paths[n], layer) for n in nets}
    measures = list(measures)
    names = [pair_name(a, b) for a, b in pairs]
    B = max(n_blocks, 1)
    draws = (st.draw({"x": ("x",)}, n_blocks, R, seed).block_counts if n_blocks
             else np.ones((R, 1), dtype=np.int64))
    estimate = np.full((len(measures), len(pairs)), np.nan)
    values = np.full((len(measures), len(pairs), R), np.nan)
    jack = np.full((len(measures), len(pairs), B), np.nan)
    # BCa's acceleration needs each block left out once; the other intervals do not
    bca = cfg.get("interval") == "bca"
    leave_one_out = 1 - np.eye(B, dtype=np.int64)
    for p, (a, b) in enumerate(pairs):
        blocks = bl.PairBlocks.from_rows(acts[a], acts[b], block_of_row, B)
        weights = np.vstack([np.ones((1, B), np.int64), draws if n_blocks else np.empty((0, 1), np.int64),
                             leave_one_out if n_blocks and bca else np.empty((0, B), np.int64)])
        wanted = [m for m in measures if (a, b) not in baseline_pairs or m in baseline_measures]
        grid = [m for m in wanted if m.startswith(SUBSPACE_PREFIX)]
        moment = [m for m in wanted if m not in grid]
        out = blocks.measures(moment, weights, threads=threads) if moment else {}
        if grid:  # Algorithm 1 once per replicate and repeat for the whole eps grid
            eps = [float(m[len(SUBSPACE_PREFIX):]) for m in grid]
            repeats = list(subspace_rows or [None])
            curves = np.zeros((len(weights), len(eps)))
            for k, rows in enumerate(repeats):
                progress = None if log is None else RateLog(
                    f"{layer} {pair_name(a, b)} s(eps) replicates, repeat {k + 1}/{len(repeats)}", file=sys.stdout)
                part = blocks if rows is None else bl.PairBlocks.from_rows(
                    acts[a][rows], acts[b][rows], block_of_row[rows], B)
                curves += part.subspace_curves(weights, eps, progress)
            curves /= len(repeats)
            out.update({m: curves[:, k] for k, m in enumerate(grid)})
        for m, name in enumerate(measures):
            if name not in out:
                continue
            estimate[m, p] = out[name][0]
            if n_blocks:
                values[m, p] = out[name][1:1 + R]
                if bca:
                    jack[m, p] = out[name][1 + R:]
            else:
                values[m, p] = out[name][0]
        _progress(log, f"{layer} {names[p]} ({p + 1}/{len(pairs)}): "
                       + ", ".join(f"{n} {estimate[m, p]:.3f}" for m, n in enumerate(measures) if n in wanted))
    result = LayerReplicates(layer, seed, R, n_blocks, names, measures, estimate, values, jack,
                             np.asarray(draws, np.int64), input_block, note)
    if permutation_pair is not None and int(cfg["permutations"]) > 0:
        _permutation_tests(result, acts, permutation_pair, paths, layer, cfg, log)
    return result


def _permutation_tests(result: LayerReplicates, acts: dict, pair: tuple[str, str], paths, layer, cfg, log):
    """First pair's permutation tests on at most ``permutation_inputs`` probe inputs (whole inputs,
    all their rows), for the measures with a raw-row function."""
    from convergent.activations import read_positions
    from convergent.sampling import sample_rows, seeded_rng

    a, b = pair
    positions = read_positions(paths[a], layer)
    n_inputs = len(result.input_block)
    row_input = positions[:, 0] if positions is not None else np.arange(n_inputs)
    chosen = sample_rows(n_inputs, int(cfg["permutation_inputs"]), seeded_rng(int(cfg["seed"]), layer, "permutation"))
    keep = np.arange(len(row_input)) if chosen is None else np.flatnonzero(np.isin(row_input, chosen))
    x, y = acts[a][keep], acts[b][keep]
    # equal rows per input (input_rows' requirement): drop inputs with an odd count (never, for the extractor)
    inputs, counts = np.unique(row_input[keep], return_counts=True)
    full = np.isin(row_input[keep], inputs[counts == counts.max()])
    x, y, rows_of = x[full], y[full], row_input[keep][full]
    result.permutation_pair = pair_name(a, b)
    result.permutation_inputs = int(len(np.unique(rows_of)))
    for measure in [m for m in ("matching", "linear_cka") if m in result.measures]:
        xp, yp, fn = permutation_statistic(measure, x, y)
        test = st.permutation_test(fn, xp, yp, permutations=int(cfg["permutations"]), seed=int(cfg["seed"]),
                                   row_input=rows_of)
        result.permutation[measure] = {"observed": test.statistic, "p_value": test.p_value,
                                       "permutations": test.permutations, "null": test.null}
        _progress(log, f"{layer} {result.permutation_pair} {measure}: {test.statistic:.3f} on "
                       f"{result.permutation_inputs} inputs, null mean {np.nanmean(test.null):.3f}, "
                       f"p = {test.p_value:.4f} ({test.permutations} permutations)")

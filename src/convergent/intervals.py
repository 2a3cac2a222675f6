"""Interval columns, tests and seeds-needed tables for the pipeline's summaries.

The tables report means over seed pairs. Here each such mean becomes a
:func:`convergent.statistics.pairwise` statistic - over the stored replicates of
:mod:`convergent.replicates` where the layer has them (seeds and probe inputs resampled jointly),
over the per-pair values otherwise (seeds only) - and gets its interval, its tests and the number
of seeds a target width needs. Every statistic of one table uses the same draws (``seed``), so
differences between layers and between trained and untrained pairs are paired.

>>> s = Settings(replicates=1000, seed=0, level=0.95, method="percentile", correct=True)
>>> values = {("seed0", "seed1"): 0.81, ("seed0", "seed2"): 0.78, ("seed1", "seed2"): 0.84,
...           ("seed0", "seed3"): 0.80, ("seed1", "seed3"): 0.79, ("seed2", "seed3"): 0.83}
>>> ci = mean_interval(values, s)
>>> row = interval_fields(ci, "per-pair values")
>>> round(ci.estimate, 3), row["lo"] < ci.estimate < row["hi"], row["note"]
(0.808, True, 'over seeds (4 seeds); inputs fixed: per-pair values')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Hashable, Mapping, Sequence

import numpy as np
import pandas as pd

from convergent import ranges
from convergent import statistics as st
from convergent.replicates import LayerReplicates

__all__ = ["Settings", "load_replicates", "pair_mean", "mean_interval", "describe", "interval_fields", "frame_intervals",
           "subspace_intervals", "subspace_table", "tests_table", "seeds_needed_table", "TEST_MEASURES", "settings_of", "pair_fields",
           "net_fields", "merge_notes", "split_pair", "summary_rows"]

#: the measures the tests table compares: Li et al.'s mean matching correlation and linear CKA
TEST_MEASURES = ("matching", "linear_cka")
Pair = tuple[Hashable, Hashable]


@dataclass(frozen=True)
class Settings:
    """The `statistics` config keys an interval needs."""

    replicates: int
    seed: int
    level: float
    method: str
    correct: bool

    @classmethod
    def from_config(cls, cfg: Mapping) -> "Settings":
        return cls(int(cfg["replicates"]), int(cfg["seed"]), float(cfg["level"]), str(cfg["interval"]),
                   bool(cfg["correct"]))

    @classmethod
    def for_subspace(cls, cfg: Mapping) -> "Settings":
        """Wang's s(ε) table and Fig. 1: ``subspace_replicates`` draws where that key is above 0
        (the `bootstrap_subspace` replicates, seeds and inputs), else ``replicates`` (seeds only)."""
        settings = cls.from_config(cfg)
        n = int(cfg.get("subspace_replicates") or 0)
        return replace(settings, replicates=n) if n else settings

    @property
    def label(self) -> str:
        return f"{self.method}, {self.replicates} replicates"


def load_replicates(layers: Sequence[str], paths: Sequence) -> dict[str, LayerReplicates]:
    """Each layer's stored replicates (``statistics/{layer}.h5``, in ``layers`` order); none given:
    an empty mapping, and the intervals are over seeds only."""
    paths = list(paths or [])
    if not paths:
        return {}
    return {layer: LayerReplicates.load(p) for layer, p in zip(layers, paths, strict=True)}


def _groups(pairs: Sequence[Pair], untrained: Sequence[Hashable] = ()) -> dict[str, tuple]:
    nets = tuple(dict.fromkeys(n for pair in pairs for n in pair))
    trained = tuple(n for n in nets if n not in set(untrained))
    groups = {"trained": trained}
    if any(n in set(untrained) for n in nets):
        groups["untrained"] = tuple(n for n in nets if n in set(untrained))
    return groups


def pair_mean(values: Mapping[Pair, float], settings: Settings, replicates: LayerReplicates | None = None,
              measure: str | None = None, untrained: Sequence[Hashable] = (), groups: Mapping | None = None,
              label: str = "") -> st.Statistic:
    """The mean of ``values`` over its pairs as a multi-bootstrap statistic: over the stored
    replicates of ``measure`` when ``replicates`` has them for every pair (seeds and inputs),
    over the numbers otherwise (seeds only). ``untrained``: networks resampled as their own group.
    ``measure`` also names the values' range (:mod:`convergent.ranges`), which keeps the interval
    inside it; None: unbounded."""
    pairs = list(values)
    bounds = None if measure is None else ranges.bounds(measure)
    groups = dict(groups) if groups is not None else _groups(pairs, untrained)
    if replicates is not None and (replicates.replicates, replicates.seed) != (settings.replicates, settings.seed):
        raise ValueError(f"replicates of layer {replicates.layer!r} were drawn with statistics.replicates="
                         f"{replicates.replicates}, seed={replicates.seed}, the table asks for "
                         f"{settings.replicates}, {settings.seed}: rerun the bootstrap rule")
    if (replicates is not None and measure is not None and replicates.resampled_inputs
            and all(replicates.has(measure, str(a), str(b)) for a, b in pairs)):
        fns = [replicates.pair_statistic(measure, str(a), str(b)) for a, b in pairs]
        return st.pairwise(fns, pairs, groups=groups, n_blocks=replicates.n_blocks, correct=settings.correct,
                           label=label, bounds=bounds)
    return st.pairwise([float(values[p]) for p in pairs], pairs, groups=groups, correct=settings.correct,
                       label=label, bounds=bounds)


def mean_interval(values: Mapping[Pair, float], settings: Settings, replicates: LayerReplicates | None = None,
                  measure: str | None = None, untrained: Sequence[Hashable] = ()) -> st.Interval:
    """Interval of the mean of ``values`` over pairs (see :func:`pair_mean`)."""
    statistic = pair_mean(values, settings, replicates, measure, untrained)
    return st.bootstrap(statistic, replicates=settings.replicates, seed=settings.seed, level=settings.level,
                        method=settings.method)


def settings_of(params) -> "Settings | None":
    """The interval settings of a step's ``params.statistics``; None when the rule passes none
    (a table then has no interval columns)."""
    cfg = getattr(params, "statistics", None)
    return None if cfg is None else Settings.from_config(cfg)


def split_pair(name: str) -> Pair:
    """``"0-1"`` or ``"seed0-untrained100"`` as a pair of network names."""
    a, b = str(name).split("-")
    return a, b


def pair_fields(values: Mapping[Pair, float], settings: Settings, measure: str | None = None, *,
                replicates: LayerReplicates | None = None, untrained: Sequence[Hashable] = (),
                fixed: str = "per-pair values", prefix: str = "") -> dict:
    """``lo``, ``hi``, ``note`` (prefixed) of the mean of per-pair values (:func:`mean_interval`:
    over seeds, and over inputs where ``replicates`` has the measure); no values or a non-finite
    one: no interval, and the note says why. With one pair, :func:`describe` says that no interval
    over seeds is possible."""
    vals = list(values.values())
    if not vals or not np.isfinite(np.asarray(vals, dtype=np.float64)).all():
        return {f"{prefix}lo": math.nan, f"{prefix}hi": math.nan,
                f"{prefix}note": "no interval: " + ("no values" if not vals else "no finite values")}
    return interval_fields(mean_interval(values, settings, replicates, measure, untrained), fixed, prefix)


def net_fields(values: Mapping[Hashable, float], settings: Settings, measure: str, *, fixed: str = "",
               prefix: str = "") -> dict:
    """``lo``, ``hi``, ``note`` (prefixed) of the mean of per-network values (accuracy) over seeds."""
    vals = np.asarray(list(values.values()), dtype=np.float64)
    if not vals.size or not np.isfinite(vals).all():
        return {f"{prefix}lo": math.nan, f"{prefix}hi": math.nan, f"{prefix}note": "no interval: no finite values"}
    stat = st.per_net(list(vals), list(values), correct=settings.correct, bounds=ranges.bounds(measure))
    return interval_fields(_boot(stat, settings), fixed, prefix)


def summary_rows(table: pd.DataFrame, by: Sequence[str], quantities: Mapping[str, str], settings: Settings, *,
                 pair: str = "pair", label: str = "mean", fixed: str = "per-pair values", sep: str = "_") -> pd.DataFrame:
    """Per group of ``by``: the mean over the group's pairs (column ``pair``, ``"a-b"``) of each
    quantity (``{column: range name}``) with ``{column}{sep}lo``, ``{column}{sep}hi``, as rows whose
    ``pair`` is ``label``; one ``note`` per row (:func:`merge_notes`)."""
    rows = []
    for key, group in table.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row, notes = {**dict(zip(by, key)), pair: label}, {}
        for column, measure in quantities.items():
            values = {split_pair(p): float(v) for p, v in zip(group[pair], group[column])}
            fields = pair_fields(values, settings, measure, fixed=fixed)
            row.update({column: float(np.mean(list(values.values()))), f"{column}{sep}lo": fields["lo"],
                        f"{column}{sep}hi": fields["hi"]})
            notes[column] = fields["note"]
        row["note"] = merge_notes(notes)
        rows.append(row)
    return pd.DataFrame(rows)


def merge_notes(notes: Mapping[str, str]) -> str:
    """One note for several quantities of a row: the shared text when they agree, else each
    prefixed by its quantity."""
    texts = [n for n in notes.values() if n]
    if len(set(texts)) <= 1:
        return texts[0] if texts else ""
    return "; ".join(f"{q}: {n}" for q, n in notes.items() if n)


def describe(ci: st.Interval, fixed: str = "") -> str:
    """What an interval was computed over, in words: ``over seeds and inputs (4 seeds, 100 input
    blocks)``, ``over inputs only: one seed pair``, ... ``fixed``: why the inputs were not
    resampled, when they were not."""
    parts = []
    if ci.over == "seeds and inputs":
        parts.append(f"over seeds and inputs ({ci.seeds} seeds, {ci.blocks} input blocks)")
    elif ci.over == "seeds":
        parts.append(f"over seeds ({ci.seeds} seeds)" + (f"; inputs fixed: {fixed}" if fixed else ""))
    elif ci.over == "inputs":
        parts.append(f"over inputs only ({ci.blocks} input blocks)")
    elif not ci.note:  # a note of its own says why there is none
        parts.append("no interval")
    if ci.note:
        parts.append(ci.note)
    return "; ".join(parts)


def interval_fields(ci: st.Interval, fixed: str = "", prefix: str = "") -> dict:
    """``lo``, ``hi`` and ``note`` columns (prefixed) of an interval."""
    return {f"{prefix}lo": ci.lo, f"{prefix}hi": ci.hi, f"{prefix}note": describe(ci, fixed)}


def _fixed_reason(replicates: LayerReplicates | None) -> str:
    if replicates is None:
        return "per-pair values"
    return replicates.block_note or "per-pair values"


# --------------------------------------------------------------------------- tests


def _p_columns(p_value: float, method: str) -> dict:
    return {"p_value": p_value, "p_method": method}


def tests_table(replicates: Mapping[str, LayerReplicates], trained_pairs: Sequence[Pair],
                untrained_pairs: Sequence[Pair], untrained: Sequence[Hashable], settings: Settings,
                differences: Sequence[tuple[str, str]], correction: str = "holm",
                measures: Sequence[str] = TEST_MEASURES) -> pd.DataFrame:
    """Per layer and measure, the papers' comparisons as tests:

    * ``trained vs untrained``: mean over trained pairs minus mean over trained-vs-untrained pairs,
      paired multi-bootstrap (trained seeds, untrained networks and inputs resampled); one-sided
      p-value from the replicates (:func:`statistics.bootstrap_p_value`);
    * ``permutation null``: the first trained pair against whole probe inputs shuffled
      (:mod:`convergent.replicates`), ``p = (1 + k) / (1 + n)``;
    * ``layer difference``: ``layer_a - layer_b`` of the mean over trained pairs on shared draws,
      two-sided p-value from the replicates.

    p-values of one test and measure are adjusted across layers (layer pairs) by ``correction``
    (``holm`` or ``none``); ``reject`` at ``1 - level``.
    """
    alpha = 1 - settings.level
    rows = []
    layers = list(replicates)
    for measure in measures:
        layers_m = [layer for layer in layers if measure in replicates[layer].measures]
        means = {}
        for layer in layers_m:
            rep = replicates[layer]
            values = {p: rep.estimate[rep.measures.index(measure), rep.pairs.index(f"{p[0]}-{p[1]}")]
                      for p in trained_pairs}
            means[layer] = pair_mean(values, settings, rep, measure, label=f"{measure} {layer}")
            if untrained_pairs:
                base = {p: rep.estimate[rep.measures.index(measure), rep.pairs.index(f"{p[0]}-{p[1]}")]
                        for p in untrained_pairs}
                both = _groups(list(trained_pairs) + list(untrained_pairs), untrained)
                diff = (pair_mean(values, settings, rep, measure, groups=both)
                        - pair_mean(base, settings, rep, measure, groups=both))
                ci = _boot(diff, settings)
                rows.append({"test": "trained vs untrained", "measure": measure, "layer_a": layer, "layer_b": "",
                             "statistic": "mean(trained pairs) - mean(trained vs untrained pairs)",
                             **_ci_columns(ci, settings, _fixed_reason(rep)),
                             **_p_columns(st.bootstrap_p_value(ci, 0.0, "greater"),
                                          f"bootstrap, one-sided: (1 + #{{replicates <= 0}}) / (1 + {ci.replicates})")})
            test = rep.permutation.get(measure)
            if test is not None:
                null = np.asarray(test["null"], dtype=np.float64)
                lo, hi = np.quantile(null, [alpha / 2, 1 - alpha / 2])
                rows.append({"test": "permutation null", "measure": measure, "layer_a": layer, "layer_b": "",
                             "statistic": f"pair {rep.permutation_pair} on {rep.permutation_inputs} inputs "
                                          "vs whole inputs shuffled",
                             "estimate": float(test["observed"]), "lo": math.nan, "hi": math.nan,
                             "level": settings.level, "interval": "", "seeds": 2, "blocks": 0,
                             "note": f"null mean {null.mean():.3f}, {settings.level:.0%} of null in "
                                     f"[{lo:.3f}, {hi:.3f}]",
                             **_p_columns(float(test["p_value"]), "permutation, one-sided: (1 + #{null >= observed})"
                                          f" / (1 + {int(test['permutations'])})")})
        for la, lb in differences:
            if la not in means or lb not in means:
                continue
            ra, rb = replicates[la], replicates[lb]
            a, b = means[la], means[lb]
            fixed = ""
            if a.n_blocks != b.n_blocks:  # blocks of two layers differ: pair them over seeds only
                values_a = {p: ra.estimate[ra.measures.index(measure), ra.pairs.index(f"{p[0]}-{p[1]}")]
                            for p in trained_pairs}
                values_b = {p: rb.estimate[rb.measures.index(measure), rb.pairs.index(f"{p[0]}-{p[1]}")]
                            for p in trained_pairs}
                a, b = pair_mean(values_a, settings, measure=measure), pair_mean(values_b, settings, measure=measure)
                fixed = "the two layers have different input blocks"
            ci = _boot(a - b, settings)
            rows.append({"test": "layer difference", "measure": measure, "layer_a": la, "layer_b": lb,
                         "statistic": f"mean(trained pairs) {la} - {lb}, paired",
                         **_ci_columns(ci, settings, fixed or _fixed_reason(ra)),
                         **_p_columns(st.bootstrap_p_value(ci, 0.0, "two-sided"),
                                      f"bootstrap, two-sided: 2 min(1 + #{{replicates <= 0}}, 1 + #{{replicates >= 0}}) / "
                                      f"(1 + {ci.replicates}), at most 1")})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_adjusted"] = np.nan
    table["correction"] = ""
    for (test, measure), idx in table.groupby(["test", "measure"]).groups.items():
        p = table.loc[idx, "p_value"].to_numpy(dtype=np.float64)
        if correction == "holm":
            table.loc[idx, "p_adjusted"] = st.holm(p)
            table.loc[idx, "correction"] = f"Holm over {np.isfinite(p).sum()} {'layer pairs' if test == 'layer difference' else 'layers'}"
        else:
            table.loc[idx, "p_adjusted"] = p
            table.loc[idx, "correction"] = "none"
    table["reject"] = table["p_adjusted"] < alpha
    table["reading"] = [_reading(r, alpha) for r in table.itertuples()]
    order = {"trained vs untrained": 0, "permutation null": 1, "layer difference": 2}
    table = table.sort_values("test", key=lambda c: c.map(order), kind="stable")
    columns = ["test", "measure", "layer_a", "layer_b", "statistic", "estimate", "lo", "hi", "level", "interval",
               "p_value", "p_method", "p_adjusted", "correction", "seeds", "blocks", "reject", "reading", "note"]
    return table[columns].reset_index(drop=True)


def _boot(statistic: st.Statistic, settings: Settings) -> st.Interval:
    return st.bootstrap(statistic, replicates=settings.replicates, seed=settings.seed, level=settings.level,
                        method=settings.method)


def _ci_columns(ci: st.Interval, settings: Settings, fixed: str) -> dict:
    return {"estimate": ci.estimate, "lo": ci.lo, "hi": ci.hi, "level": settings.level, "interval": settings.label,
            "seeds": ci.seeds, "blocks": ci.blocks, "note": describe(ci, fixed)}


def _reading(row, alpha: float) -> str:
    if not np.isfinite(row.p_adjusted):
        return "not tested"
    if row.test == "trained vs untrained":
        return ("trained pairs more similar than trained vs untrained" if row.reject
                else f"not distinguishable from trained vs untrained at {row.seeds} seeds")
    if row.test == "permutation null":
        return "above chance (permutation null)" if row.reject else "not distinguishable from chance"
    if row.reject:
        return f"{row.layer_a} {'higher' if row.estimate > 0 else 'lower'} than {row.layer_b}"
    return f"{row.layer_a} and {row.layer_b} not distinguishable at {row.seeds} seeds"


# --------------------------------------------------------------------------- seeds needed


def seeds_needed_table(replicates: Mapping[str, LayerReplicates], trained_pairs: Sequence[Pair],
                       settings: Settings, width: float, measures: Sequence[str] | None = None) -> pd.DataFrame:
    """Per layer and measure: the bootstrap interval's width at the seeds measured and the number
    of seeds whose interval would be ``width`` wide (:func:`statistics.seeds_for_width`, from the
    seed and pair variance of the per-pair values and the inputs-only bootstrap's standard error
    as a floor that more seeds do not lower)."""
    rows = []
    for layer, rep in replicates.items():
        for measure in measures or rep.measures:
            if measure not in rep.measures:
                continue
            values = {p: rep.estimate[rep.measures.index(measure), rep.pairs.index(f"{p[0]}-{p[1]}")]
                      for p in trained_pairs}
            statistic = pair_mean(values, settings, rep, measure)
            ci = _boot(statistic, settings)
            input_sd = 0.0
            if statistic.n_blocks is not None:
                inputs_only = st.bootstrap(statistic, replicates=settings.replicates, seed=settings.seed,
                                           level=settings.level, method=settings.method, resample_nets=False)
                input_sd = inputs_only.se if np.isfinite(inputs_only.se) else 0.0
            plan = st.seeds_for_width(list(values.values()), width, pairs=list(values), level=settings.level,
                                      input_sd=input_sd)
            rows.append({"layer": layer, "measure": measure, "estimate": ci.estimate, "lo": ci.lo, "hi": ci.hi,
                         "width": ci.width, "seeds": plan.current_seeds, "model_width": plan.current_width,
                         "target_width": width, "seeds_needed": plan.seeds if plan.seeds is not None else pd.NA,
                         "seed_sd": plan.seed_sd, "pair_sd": plan.pair_sd, "input_sd": plan.input_sd,
                         "level": settings.level, "note": "; ".join(filter(None, [describe(ci, _fixed_reason(rep)),
                                                                                   plan.note]))})
    return pd.DataFrame(rows)


def frame_intervals(frame: pd.DataFrame, by: Sequence[str], value: str, settings: Settings, *,
                    a: str = "a", b: str = "b", untrained: Sequence[Hashable] = (),
                    fixed: str = "per-pair values", prefix: str = "", measure: str | None = None) -> pd.DataFrame:
    """Interval columns (``{prefix}lo``, ``{prefix}hi``, ``{prefix}note``) of the mean of ``value``
    over the pairs ``(frame[a], frame[b])`` in each group of ``by`` (one row per pair and group),
    over seeds only: for tables whose per-pair values have no stored replicates (Wang's s(ε)).
    ``measure``: the name of the values' range in :mod:`convergent.ranges`."""
    rows = []
    for key, group in frame.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        values = {(x, y): v for x, y, v in zip(group[a], group[b], group[value])}
        fields = pair_fields(values, settings, measure, untrained=untrained, fixed=fixed, prefix=prefix)
        rows.append({**dict(zip(by, key)), **fields})
    return pd.DataFrame(rows, columns=[*by, f"{prefix}lo", f"{prefix}hi", f"{prefix}note"])


SUBSPACE_FIXED = "s(eps) per pair from row samples; their spread is s_std_repeats"
SUBSPACE_INPUTS = "inputs: blocks of probe inputs resampled within each repeat's row sample"
SUBSPACE_UNDERSAMPLED = ("undersampled layer: a resample repeats inputs, which lowers the rows' rank and "
                         "inflates s(eps) (its spread over row samples is s_std_repeats)")


def _subspace_fields(frame: pd.DataFrame, settings: Settings, replicates: Mapping[str, LayerReplicates],
                     untrained: Sequence[Hashable] = (), prefix: str = "") -> pd.DataFrame:
    from convergent.replicates import subspace_measure

    rows = []
    for (layer, eps), group in frame.groupby(["layer", "eps"], sort=False):
        values = {(str(x), str(y)): v for x, y, v in zip(group["a"], group["b"], group["s"])}
        rep, stored = replicates.get(layer), subspace_measure(eps)
        undersampled = "undersampled" in group and bool(group["undersampled"].astype(bool).any())
        if undersampled:
            # a replicate repeats some inputs and leaves others out: fewer distinct rows, a lower
            # rank, so s(eps) rises; where rows per unit are already few that rise is most of the
            # spread (the default's fc1: bootstrap bias +0.12 at eps 0.3, interval [0, 0.72] around 0.006)
            rep = None
        if rep is not None and stored in rep.measures and all(rep.has(stored, x, y) for x, y in values):
            for (x, y), value in values.items():
                if abs(rep.value(stored, x, y) - value) > 1e-9:
                    raise ValueError(f"s(eps={eps:g}) replicates of {layer} {x}-{y} were computed on other rows: "
                                     f"estimate {rep.value(stored, x, y):.6g}, the subspace rule's {value:.6g}; "
                                     f"rerun the bootstrap_subspace rule")
            # s(eps) at this eps under the name whose range (ranges.bounds) keeps the interval in [0, 1]
            view = replace(rep, measures=["subspace" if m == stored else m for m in rep.measures])
            fields = pair_fields(values, settings, "subspace", replicates=view if rep.resampled_inputs else None,
                                 untrained=[str(u) for u in untrained], prefix=prefix,
                                 fixed=rep.block_note or SUBSPACE_FIXED)
            if rep.resampled_inputs and fields[f"{prefix}note"].startswith("over seeds and inputs"):
                fields[f"{prefix}note"] += f"; {SUBSPACE_INPUTS}"
        else:
            fields = pair_fields(values, settings, "subspace", untrained=[str(u) for u in untrained],
                                 fixed=SUBSPACE_UNDERSAMPLED if undersampled else SUBSPACE_FIXED, prefix=prefix)
        rows.append({"layer": layer, "eps": eps, **fields})
    return pd.DataFrame(rows, columns=["layer", "eps", f"{prefix}lo", f"{prefix}hi", f"{prefix}note"])


def subspace_table(results: Sequence, replicates: Sequence, layers: Sequence[str], cfg: Mapping) -> pd.DataFrame:
    """Wang et al.'s s(ε) table with its intervals, as the table and Fig. 1 show it: the `subspace`
    rule's pair files ``results`` (trained and baseline pairs), the `bootstrap_subspace` files
    ``replicates`` (one per layer of ``layers``, or none) and the `statistics` keys ``cfg``."""
    from convergent.subspace_results import read_pair_result, similarity_frame, summarize_similarity

    frame = similarity_frame(read_pair_result(p) for p in results)
    return subspace_intervals(frame, summarize_similarity(frame, list(layers)), Settings.for_subspace(cfg),
                              load_replicates(list(layers), replicates))


def subspace_intervals(frame: pd.DataFrame, table: pd.DataFrame, settings: Settings,
                       replicates: Mapping[str, LayerReplicates] | None = None) -> pd.DataFrame:
    """Wang et al.'s s(ε) table (:func:`convergent.subspace_results.summarize_similarity` of
    ``frame``) with interval columns for the trained mean (``lo``, ``hi``, ``note``) and the
    baseline mean (``baseline_*``), and the table's ``level`` and ``interval``: over seeds and
    probe inputs where ``replicates`` (layer -> the `bootstrap_subspace` rule's file) hold s(ε) for
    every pair of the group, over seeds otherwise."""
    keys = ["layer", "eps"]
    replicates = dict(replicates or {})
    table = table.merge(_subspace_fields(frame[~frame["baseline"]], settings, replicates), on=keys, how="left")
    base = frame[frame["baseline"]]
    if len(base):
        table = table.merge(_subspace_fields(base, settings, replicates, untrained=sorted(set(base["b"])),
                                             prefix="baseline_"), on=keys, how="left")
    table["level"] = settings.level
    table["interval"] = settings.label
    return table

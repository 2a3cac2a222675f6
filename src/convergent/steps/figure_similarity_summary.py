"""Rule `figure_similarity_summary`: every measure along the network, same layer vs same layer.

One panel per measure; x: layer; three series, each the mean over pairs:
trained seed vs trained seed (the answer), trained seed vs an untrained network of the same
architecture (what architecture and input statistics alone give), and the permutation null
(trained pairs with B's probe images shuffled, whole images at a time: chance for that measure,
sample size and width). The two network series carry their multi-bootstrap interval as a band (convergent.intervals: seeds and
probe inputs resampled where the layer has stored replicates of the measure, seeds only
otherwise); the null its std over pairs. Also writes the numbers as a table, with each layer's
rogue units (`rogue_units`: the most any trained network has, tables/rogue_dimensions; marked * on
the x axis), which the measures that sum over units report rather than the representation unless
`similarity.standardize` is on.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from convergent import similarity as sim
from convergent.intervals import Settings, load_replicates, pair_fields
from convergent.plotting import save_figure
from convergent.replicates import LayerReplicates
from convergent.rogue_dimensions import rogue_counts
from convergent.tables import write_table

SERIES = [  # (label, kind, null, colour)
    ("trained vs trained", "trained", "none", "tab:blue"),
    ("trained vs untrained", "untrained", "none", "tab:orange"),
    ("permutation null", "trained", "permutation", "tab:gray"),
]


#: measures that scaling units leaves unchanged, so replicates of raw units fit standardised ones
SCALE_INVARIANT = ("cca", "matching")

#: series with an interval over networks (the null's spread is over permutations, not a sample of seeds)
WITH_INTERVAL = ("trained vs trained", "trained vs untrained")


def summarize(frame: pd.DataFrame, layers: list[str], measures: list[str], settings: Settings | None = None,
              replicates: dict[str, LayerReplicates] | None = None,
              rogue: dict[str, int] | None = None, standardized: bool = False) -> pd.DataFrame:
    """Per layer and measure: mean and std over pairs of each series (permutations averaged
    within a pair first, so every pair weighs the same); with ``settings``, the network series'
    ``*_lo``, ``*_hi``, ``*_note`` (what was resampled) and the table's ``level``, ``interval``;
    with ``rogue`` (layer -> rogue units), a ``rogue_units`` column. ``standardized``: the values are
    of standardised units, so the stored replicates (raw units) only serve the measures that
    standardising leaves unchanged; the others are resampled over seeds only."""
    same = frame[frame["scope"] == "same_layer"]
    per_pair = same.groupby(["kind", "null", "net_a", "net_b", "layer_a", "measure"], as_index=False)["value"].mean()
    series = dict(list(per_pair.groupby(["kind", "null", "layer_a", "measure"])))
    empty = per_pair.iloc[:0]
    rows = []
    for layer in layers:
        for measure in measures:
            row = {"layer": layer, "measure": measure}
            if rogue is not None:
                row["rogue_units"] = int(rogue.get(layer, 0))
            for label, kind, null, _ in SERIES:
                key = label.replace(" ", "_")
                sel = series.get((kind, null, layer, measure), empty)
                v = sel["value"]
                row[f"{key}_mean"] = float(v.mean()) if len(v) else np.nan
                row[f"{key}_std"] = float(v.std(ddof=0)) if len(v) else np.nan
                row[f"{key}_pairs"] = int(len(v))
                if settings is not None and label in WITH_INTERVAL:
                    rep, fixed = (replicates or {}).get(layer), None
                    if standardized and measure not in SCALE_INVARIANT:
                        rep, fixed = None, "similarity.standardize (the stored replicates are of raw units)"
                    row.update(_interval(sel, kind, measure, settings, rep, key, fixed))
            if settings is not None:
                row.update({"level": settings.level, "interval": settings.label})
            rows.append(row)
    return pd.DataFrame(rows)


def _interval(sel, kind, measure, settings, rep, key, fixed=None) -> dict:
    """Interval columns of one series (``sel``: its per-pair values): the mean over its pairs,
    bootstrapped over seeds (the untrained networks as their own group) and, with stored
    replicates, over probe inputs."""
    values = {(a, b): v for a, b, v in zip(sel["net_a"], sel["net_b"], sel["value"])}
    untrained = sorted(set(sel["net_b"])) if kind == "untrained" else []
    if fixed is None:
        fixed = (rep.block_note or "no replicates of this measure") if rep is not None else "per-pair values"
    return pair_fields(values, settings, measure, replicates=rep, untrained=untrained, fixed=fixed, prefix=f"{key}_")


def main(inputs, outputs, params, log):
    frame = pd.concat([pd.read_csv(p) for p in inputs.pairs], ignore_index=True)
    layers, measures = list(params.layers), list(params.cfg["measures"])
    settings = Settings.from_config(params.statistics)
    replicates = load_replicates(params.layers, getattr(inputs, "replicates", []))
    rogue = None
    if getattr(inputs, "rogue", None):
        rogue = rogue_counts(pd.read_csv(inputs.rogue), layers)
    table = summarize(frame, layers, measures, settings, replicates, rogue, params.cfg["standardize"])
    units = "standardised units" if params.cfg["standardize"] else "raw units (similarity.standardize off)"
    write_table(table, str(outputs.csv)[: -len(".csv")],
                caption=f"Same-layer similarity on {units}, mean and std over network pairs, with {settings.level:.0%} "
                        "multi-bootstrap intervals of the means (lo, hi; the note says what was resampled)"
                        + ("; rogue_units: the layer's rogue dimensions (most in one network, tables/rogue_dimensions)"
                           if rogue is not None else ""))

    cols = min(5, len(measures))
    rows = int(np.ceil(len(measures) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.7 * rows), squeeze=False,
                             constrained_layout=True)
    x = np.arange(len(layers))
    for ax, measure in zip(axes.flat, measures):
        sub = table[table["measure"] == measure]
        for label, _, _, colour in SERIES:
            key = label.replace(" ", "_")
            mean, std = sub[f"{key}_mean"].to_numpy(), sub[f"{key}_std"].to_numpy()
            if np.isnan(mean).all():
                continue
            n = int(sub[f"{key}_pairs"].max())
            if label in WITH_INTERVAL:
                ax.plot(x, mean, marker="o", ms=3, lw=1.2, color=colour, label=f"{label} ({n})")
                ax.fill_between(x, sub[f"{key}_lo"].to_numpy(dtype=float), sub[f"{key}_hi"].to_numpy(dtype=float),
                                color=colour, alpha=0.25, lw=0)
            else:
                ax.errorbar(x, mean, yerr=std, marker="o", ms=3, lw=1.2, capsize=2, color=colour,
                            label=f"{label} ({n})")
        info = sim.MEASURES[measure]
        ax.set_title(info.label, fontsize=9)
        ax.set_xticks(x, [f"{layer}*" if rogue and rogue.get(layer) else layer for layer in layers],
                      rotation=45 if len(layers) > 6 else 0, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
        if not info.higher_is_similar:
            ax.set_ylabel("lower = more similar", fontsize=7)
    for ax in list(axes.flat)[len(measures):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="best")
    marked = "; *: layer with rogue dimensions" if rogue and any(rogue.values()) else ""
    fig.suptitle(f"Same layer across networks ({units}): mean over pairs (n in legend); bands: {settings.level:.0%} "
                 f"multi-bootstrap intervals; null: ± std{marked}", fontsize=10)
    save_figure(fig, [p for p in outputs if not str(p).endswith((".csv", ".md", ".tex"))],
                dpi=params.figures["dpi"])
    trained = table[["layer", "measure", "trained_vs_trained_mean", "permutation_null_mean"]]
    print(trained.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

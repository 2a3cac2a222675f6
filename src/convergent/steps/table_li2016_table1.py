"""Rule `table_li2016_table1`: Li et al. Table 1 for every layer.

Per layer: mean correlation of the semi-matching and of the bipartite matching, and the overlap
ratio, for the first seed pair (as the paper reports Net1 vs Net2) and as mean ± std over all
pairs, so one can tell whether the first pair was typical; each mean over pairs with its
multi-bootstrap interval (`*_lo`, `*_hi`: seeds and probe inputs resampled, convergent.intervals).
"""

from pathlib import Path

import pandas as pd

from convergent.intervals import Settings, interval_fields, load_replicates, mean_interval
from convergent.matching import read_match_csv, summarize_match, summarize_pairs
from convergent.replicates import LayerReplicates
from convergent.tables import write_table

QUANTITIES = ("semi", "matching", "overlap")


def pair_of(path) -> tuple[int, int]:
    a, b = Path(path).stem.split("-")
    return int(a), int(b)


def table1(paths_by_layer: dict[str, list], first: tuple[int, int], settings: Settings | None = None,
           replicates: dict[str, LayerReplicates] | None = None) -> pd.DataFrame:
    """One row per layer; with ``settings``, each ``*_mean`` gets ``*_lo``/``*_hi`` and the table
    ``level``, ``interval`` and a ``note`` saying what was resampled."""
    rows = []
    for layer, paths in paths_by_layer.items():
        frames = {pair_of(p): read_match_csv(p) for p in paths}
        row = summarize_pairs(frames, first=first)
        first_summary = summarize_match(frames[first])
        rows.append({"layer": layer, "units": len(frames[first]), "dead_a": first_summary["dead_a"],
                     "dead_b": first_summary["dead_b"], **row})
        if settings is not None:
            rep = (replicates or {}).get(layer)
            per_pair = {(f"seed{a}", f"seed{b}"): summarize_match(frame) for (a, b), frame in frames.items()}
            notes = {}
            for quantity in QUANTITIES:
                ci = mean_interval({p: s[quantity] for p, s in per_pair.items()}, settings, rep, quantity)
                fields = interval_fields(ci, rep.block_note if rep is not None and rep.block_note else "")
                rows[-1].update({f"{quantity}_lo": fields["lo"], f"{quantity}_hi": fields["hi"]})
                notes[quantity] = fields["note"]
            rows[-1].update({"level": settings.level, "interval": settings.label,
                             "note": notes["matching"] if len(set(notes.values())) == 1
                             else "; ".join(f"{q}: {n}" for q, n in notes.items())})
    columns = ["layer", "units", "pair", "semi", "matching", "overlap", "n_pairs", "semi_mean", "semi_std",
               "matching_mean", "matching_std", "overlap_mean", "overlap_std", "dead_a", "dead_b"]
    if settings is not None:
        columns[columns.index("semi_std") + 1:columns.index("semi_std") + 1] = ["semi_lo", "semi_hi"]
        columns[columns.index("matching_std") + 1:columns.index("matching_std") + 1] = ["matching_lo", "matching_hi"]
        columns[columns.index("overlap_std") + 1:columns.index("overlap_std") + 1] = ["overlap_lo", "overlap_hi"]
        columns += ["level", "interval", "note"]
    return pd.DataFrame(rows)[columns]


def main(inputs, outputs, params, log):
    paths = list(inputs.matches)
    by_layer = {layer: [p for p in paths if Path(p).parent.name == layer] for layer in params.layers}
    settings = Settings.from_config(params.statistics)
    replicates = load_replicates(params.layers, getattr(inputs, "replicates", []))
    df = table1(by_layer, tuple(params.first), settings, replicates)
    write_table(df, Path(outputs.csv).with_suffix(""),
                caption="Li et al. (2016) Table 1: mean correlation of units paired by semi-matching and by "
                        "bipartite matching, and the fraction of units whose two partners coincide; first "
                        f"seed pair, then mean and std over all pairs, with {settings.level:.0%} multi-bootstrap "
                        "intervals of the means (lo, hi; see note for what was resampled).")
    print(df.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

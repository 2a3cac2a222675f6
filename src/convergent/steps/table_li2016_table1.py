"""Rule `table_li2016_table1`: Li et al. Table 1 for every layer.

Per layer: mean correlation of the semi-matching and of the bipartite matching, and the overlap
ratio, for the first seed pair (as the paper reports Net1 vs Net2) and as mean ± std over all
pairs, so one can tell whether the first pair was typical.
"""

from pathlib import Path

import pandas as pd

from convergent.matching import read_match_csv, summarize_match, summarize_pairs
from convergent.tables import write_table


def pair_of(path) -> tuple[int, int]:
    a, b = Path(path).stem.split("-")
    return int(a), int(b)


def table1(paths_by_layer: dict[str, list], first: tuple[int, int]) -> pd.DataFrame:
    rows = []
    for layer, paths in paths_by_layer.items():
        frames = {pair_of(p): read_match_csv(p) for p in paths}
        row = summarize_pairs(frames, first=first)
        first_summary = summarize_match(frames[first])
        rows.append({"layer": layer, "units": len(frames[first]), "dead_a": first_summary["dead_a"],
                     "dead_b": first_summary["dead_b"], **row})
    columns = ["layer", "units", "pair", "semi", "matching", "overlap", "n_pairs", "semi_mean", "semi_std",
               "matching_mean", "matching_std", "overlap_mean", "overlap_std", "dead_a", "dead_b"]
    return pd.DataFrame(rows)[columns]


def main(inputs, outputs, params, log):
    paths = list(inputs.matches)
    by_layer = {layer: [p for p in paths if Path(p).parent.name == layer] for layer in params.layers}
    df = table1(by_layer, tuple(params.first))
    write_table(df, Path(outputs.csv).with_suffix(""),
                caption="Li et al. (2016) Table 1: mean correlation of units paired by semi-matching and by "
                        "bipartite matching, and the fraction of units whose two partners coincide; first "
                        "seed pair, then mean and std over all pairs.")
    print(df.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

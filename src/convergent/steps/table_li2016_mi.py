"""Rule `table_li2016_mi`: correlation-based vs mutual-information-based matches (Li §3.2).

Per layer and seed pair with mutual information: how many of the top-k semi-matched (unit,
partner) pairs coincide (Li: "seven out of eight highest matched pairs in the conv1 layer stay
the same"), the fraction of units with the same partner under both measures for the full
semi-matching and for the bipartite matching, and Table 1's columns in nats. Per layer, a `mean`
row over its pairs with each quantity's bootstrap interval over seeds (`*_lo`, `*_hi`; pairs
rebuilt from the drawn seeds; the probe inputs are fixed, as the match files hold no per-input
values): with one pair the note says no interval is possible.
"""

from pathlib import Path

import pandas as pd

from convergent.intervals import settings_of, summary_rows
from convergent.matching import frame_matches, partner_agreement, read_match_csv, summarize_match, top_k_agreement
from convergent.tables import write_table


def compare(corr: pd.DataFrame, mi: pd.DataFrame, k: int) -> dict:
    corr_semi, corr_match = frame_matches(corr)
    mi_semi, mi_match = frame_matches(mi)
    s = summarize_match(mi)
    return {
        f"top{k}_same": top_k_agreement(corr_semi, mi_semi, k),
        "semi_same": partner_agreement(corr_semi, mi_semi),
        "matching_same": partner_agreement(corr_match, mi_match),
        "mi_semi": s["semi"],
        "mi_matching": s["matching"],
        "mi_overlap": s["overlap"],
    }


def main(inputs, outputs, params, log):
    k = params.cfg["top_k"]
    rows = []
    for corr_path, mi_path in zip(inputs.corr, inputs.mi, strict=True):
        corr_path, mi_path = Path(corr_path), Path(mi_path)
        assert (corr_path.parent.name, corr_path.name) == (mi_path.parent.name, mi_path.name)
        rows.append({"layer": corr_path.parent.name, "pair": corr_path.stem,
                     **compare(read_match_csv(corr_path), read_match_csv(mi_path), k)})
    df = pd.DataFrame(rows)
    caption = (f"Correlation vs mutual information matches: top-{k} semi-matched pairs in common, "
               "fraction of units with the same partner (semi-matching, bipartite matching), and "
               "mean mutual information (nats) of the MI-based matches with their overlap ratio.")
    settings = settings_of(params)
    if settings is not None and len(df):
        quantities = {f"top{k}_same": "count", "semi_same": "fraction", "matching_same": "fraction",
                      "mi_semi": "mi", "mi_matching": "mi", "mi_overlap": "overlap"}
        means = summary_rows(df, ["layer"], quantities, settings, fixed="probe inputs fixed (match files)")
        df = pd.concat([df, means], ignore_index=True).sort_values("layer", kind="stable", key=_layer_order(df))
        columns = ["layer", "pair"] + [c for q in quantities for c in (q, f"{q}_lo", f"{q}_hi")] + ["note"]
        df = df[columns].assign(level=settings.level, interval=settings.label)
        caption += (f" Rows 'mean': mean over the layer's pairs with its {settings.level:.0%} bootstrap interval "
                    "over seeds (lo, hi; see note).")
    write_table(df, Path(outputs.csv).with_suffix(""), caption=caption)
    print(df.to_string(index=False))


def _layer_order(df):
    order = {layer: i for i, layer in enumerate(dict.fromkeys(df["layer"]))}
    return lambda column: column.map(order)


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Rule `table_li2016_clusters`: the spectral clustering of every layer in numbers (Li §4.2–4.3).

One row per layer and seed pair: τ and k, the number of first-level clusters, how many of them
hold units of both nets, mean units per cluster from each net and the mean between-/within-net
similarity of the clusters holding both; the same for the leaves of the hierarchical clustering.
Per layer, a `mean` row over its pairs; the between- and within-net similarities and the number
of clusters holding both nets carry their bootstrap interval over seeds (`... lo`, `... hi`; pairs
rebuilt from the drawn seeds, probe inputs fixed): with one pair the note says none is possible.
"""

import pandas as pd

from convergent.clustering import read_clusters_json
from convergent.intervals import settings_of, summary_rows
from convergent.tables import write_table


def cluster_row(doc) -> dict:
    row = {"layer": doc["layer"], "pair": f"{doc['a']}-{doc['b']}", "units": doc["units"],
           "dead": len(doc["dead_a"]) + len(doc["dead_b"]), "tau": doc["tau"], "k": doc["k"]}
    for name, key in (("clusters", "flat"), ("leaves", "leaves")):
        s, table = doc["summary"][key], doc["clusters" if key == "flat" else "leaves"]
        both = table.dropna(subset=["between"])
        row.update({
            f"{name}": s["n_clusters"], f"{name} with both": s["n_both"],
            f"{name} mean size a": s["mean_size_a"], f"{name} mean size b": s["mean_size_b"],
            f"{name} between-net sim": both.between.mean() if len(both) else float("nan"),
            f"{name} within-net sim": both.within.mean() if len(both) else float("nan"),
        })
    return row


def main(inputs, outputs, params, log):
    table = pd.DataFrame([cluster_row(read_clusters_json(path)) for path in inputs.json])
    caption = ("Spectral clustering of both nets' units per layer (Li et al. §4): first-level clusters "
               "and leaves of the hierarchical clustering; similarities are means over clusters holding "
               "units of both nets.")
    settings = settings_of(params)
    if settings is not None and len(table):
        quantities = {f"{name}{what}": measure for name in ("clusters", "leaves")
                      for what, measure in ((" with both", "count"), (" between-net sim", "correlation"),
                                            (" within-net sim", "correlation"))}
        means = summary_rows(table, ["layer"], quantities, settings, fixed="probe inputs fixed (cluster files)",
                             sep=" ")
        order = {layer: i for i, layer in enumerate(dict.fromkeys(table["layer"]))}
        table = pd.concat([table, means], ignore_index=True).sort_values(
            "layer", kind="stable", key=lambda c: c.map(order))
        first = [c for c in table.columns if c not in ("note",)]
        table = table[first + ["note"]].assign(level=settings.level, interval=settings.label).reset_index(drop=True)
        caption += (f" Rows 'mean': mean over the layer's pairs with {settings.level:.0%} bootstrap intervals over "
                    "seeds (lo, hi; see note).")
    write_table(table, str(outputs.csv)[: -len(".csv")], caption=caption)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

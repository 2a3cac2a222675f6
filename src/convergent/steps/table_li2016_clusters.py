"""Rule `table_li2016_clusters`: the spectral clustering of every layer in numbers (Li §4.2–4.3).

One row per layer and seed pair: τ and k, the number of first-level clusters, how many of them
hold units of both nets, mean units per cluster from each net and the mean between-/within-net
similarity of the clusters holding both; the same for the leaves of the hierarchical clustering.
"""

import pandas as pd

from convergent.clustering import read_clusters_json
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
    write_table(table, str(outputs.csv)[: -len(".csv")], caption=caption)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

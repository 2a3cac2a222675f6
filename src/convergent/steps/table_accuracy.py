"""Rule `table_accuracy`: held-out accuracy, epochs and wall time of every network."""

import json

import pandas as pd

from convergent.tables import write_table


def main(inputs, outputs, params, log):
    rows = []
    for path in inputs.metrics:
        m = json.loads(open(path).read())
        rows.append({"seed": m["seed"], "trained": m.get("trained", True), "architecture": m["architecture"],
                     "dataset": m["dataset"], "epochs": m["epochs"], "heldout_accuracy": m["heldout_accuracy"],
                     "train_seconds": m["seconds"]})
    df = pd.DataFrame(rows).sort_values(["trained", "seed"], ascending=[False, True])
    trained = df[df.trained]
    summary = {"seed": "mean ± std", "trained": True, "architecture": "", "dataset": "",
               "epochs": None, "heldout_accuracy": trained.heldout_accuracy.mean(),
               "train_seconds": trained.train_seconds.mean()}
    df = pd.concat([df, pd.DataFrame([summary])], ignore_index=True)
    df["heldout_accuracy_std"] = [None] * (len(df) - 1) + [trained.heldout_accuracy.std(ddof=1)]
    write_table(df, outputs.csv[: -len(".csv")], float_format="{:.4f}",
                caption="Held-out accuracy of every network")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

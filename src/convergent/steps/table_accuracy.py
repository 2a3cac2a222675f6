"""Rule `table_accuracy`: held-out accuracy, epochs and wall time of every network; the mean over
trained seeds with its bootstrap interval over seeds (`lo`, `hi`; the held-out images are fixed:
each network's accuracy is one number here), convergent.intervals."""

import json

import pandas as pd

from convergent.intervals import net_fields, settings_of
from convergent.tables import write_table


def main(inputs, outputs, params, log):
    rows = []
    for path in inputs.metrics:
        m = json.loads(open(path).read())
        rows.append({"network": f"{'seed' if m.get('trained', True) else 'untrained'} {m['seed']}",
                     "architecture": m["architecture"], "dataset": m["dataset"], "epochs": m["epochs"],
                     "heldout_accuracy": m["heldout_accuracy"], "train_seconds": m["seconds"],
                     "trained": m.get("trained", True)})
    df = pd.DataFrame(rows).sort_values(["trained", "network"], ascending=[False, True])
    trained = df[df.trained]
    summary = [{"network": f"{label} over {len(trained)} trained", "architecture": "", "dataset": "",
                "epochs": None, "heldout_accuracy": getattr(trained.heldout_accuracy, label)(),
                "train_seconds": getattr(trained.train_seconds, label)()} for label in ("mean", "std")]
    settings = settings_of(params)
    if settings is not None:
        summary[0].update(net_fields(dict(zip(trained.network, trained.heldout_accuracy)), settings, "accuracy",
                                     fixed="held-out images fixed"))
    df = pd.concat([df.drop(columns="trained"), pd.DataFrame(summary)], ignore_index=True)
    caption = "Held-out accuracy of every network"
    if settings is not None:
        df["level"] = settings.level
        df["interval"] = settings.label
        caption += (f"; lo, hi: {settings.level:.0%} bootstrap interval of the mean over trained seeds "
                    "(see note)")
    write_table(df, outputs.csv[: -len(".csv")], float_format="{:.4f}", caption=caption)


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

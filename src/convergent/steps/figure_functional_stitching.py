"""Rule `figure_functional_stitching`: stitching penalty along depth, and the per-layer table.

x: the stitched layer, input to output; y: B's held-out accuracy minus the stitched network's
(A's bottom, a map, B's top), for the trained stitching layer (Bansal et al. 2021), Li et al.'s
matching as a permutation and Li et al.'s sparse L1 map; mean ± std over seed pairs, each pair
as a thin line. The table's mean penalty carries its bootstrap interval over seeds (`penalty_lo`,
`penalty_hi`: pairs rebuilt from the drawn seeds, held-out images fixed); with one pair the note
says none is possible.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from convergent.intervals import pair_fields, settings_of
from convergent.plotting import save_figure
from convergent.stitching import STITCHES, stitching_table
from convergent.tables import write_table

STYLE = {"trained": ("trained stitching layer", "tab:blue"),
         "permutation": ("matching (permutation)", "tab:orange"),
         "sparse": ("sparse L1 map", "tab:green")}


def main(inputs, outputs, params, log):
    frame = pd.concat([pd.read_csv(p) for p in inputs.pairs], ignore_index=True)
    layers = list(params.layers)
    table = stitching_table(frame, layers)
    caption = "Stitching penalty (B's accuracy minus the stitched accuracy) per layer, over seed pairs"
    settings = settings_of(params)
    if settings is not None and len(table):
        fields = [pair_fields({(str(a), str(b)): v for a, b, v in
                               frame[(frame["layer"] == r.layer) & (frame["stitch"] == r.stitch)][
                                   ["a", "b", "penalty"]].itertuples(index=False)},
                              settings, "stitching_penalty", fixed="held-out images fixed")
                  for r in table.itertuples()]
        at = table.columns.get_loc("penalty_mean") + 1
        table.insert(at, "penalty_lo", [f["lo"] for f in fields])
        table.insert(at + 1, "penalty_hi", [f["hi"] for f in fields])
        table = table.assign(note=[f["note"] for f in fields], level=settings.level, interval=settings.label)
        caption += f"; lo, hi: {settings.level:.0%} bootstrap interval of the mean penalty over seeds (see note)"
    write_table(table, str(outputs.csv)[: -len(".csv")], float_format="{:.4f}", caption=caption)
    print(table.to_string(index=False))

    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(layers) + 2.5), 3.4), constrained_layout=True)
    for stitch in STITCHES:
        label, colour = STYLE[stitch]
        sub = table[table["stitch"] == stitch].set_index("layer").reindex(layers)
        if sub["penalty_mean"].isna().all():
            continue
        for _, pair in frame[frame["stitch"] == stitch].groupby(["a", "b"]):
            per = pair.set_index("layer").reindex(layers)["penalty"].to_numpy()
            ax.plot(x, per, color=colour, lw=0.5, alpha=0.35)
        ax.errorbar(x, sub["penalty_mean"], yerr=sub["penalty_std"].fillna(0), color=colour, marker="o",
                    ms=3.5, lw=1.6, capsize=2, label=label)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, layers, rotation=45 if len(layers) > 6 else 0, fontsize=8)
    ax.set_xlabel("stitched layer (A below, B above)")
    ax.set_ylabel("stitching penalty\n(B's accuracy − stitched accuracy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    n = frame.groupby(["a", "b"]).ngroups
    ax.set_title(f"Model stitching along depth: mean ± std over {n} seed pair{'s' * (n > 1)}", fontsize=9)
    save_figure(fig, [p for p in outputs if not str(p).endswith((".csv", ".md", ".tex"))],
                dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

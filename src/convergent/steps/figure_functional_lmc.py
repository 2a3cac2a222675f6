"""Rule `figure_functional_lmc`: linear mode connectivity curves and the barrier table.

One figure per seed pair and one of the mean over pairs (± std): held-out loss and accuracy of
``(1 − α)·θ_A + α·θ_B'`` against α for B' = B unaligned, activation-matched and weight-matched
(the curves of Ainsworth et al. 2023; batch-norm statistics reset at every α as in Jordan et al.
2023). The table gives each pair's barrier and the mean and std over pairs; the mean rows carry
the bootstrap interval over seeds of both barriers (`*_barrier_lo`, `*_barrier_hi`: pairs rebuilt
from the drawn seeds, held-out images fixed); with one pair the note says none is possible.
"""

import matplotlib.pyplot as plt
import pandas as pd

from convergent.connectivity import barrier_table
from convergent.intervals import merge_notes, pair_fields, settings_of, split_pair
from convergent.plotting import outputs_named, save_figure
from convergent.tables import write_table

STYLE = {"none": ("unaligned", "tab:gray"), "activation": ("activation matching", "tab:orange"),
         "weight": ("weight matching", "tab:blue")}


def draw(curves: pd.DataFrame, title: str):
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), constrained_layout=True)
    for alignment, (label, colour) in STYLE.items():
        sub = curves[curves["alignment"] == alignment]
        if sub.empty:
            continue
        stats = sub.groupby("alpha")[["loss", "accuracy"]].agg(["mean", "std"])
        alphas = stats.index.to_numpy()
        for ax, column in zip(axes, ("loss", "accuracy")):
            mean, std = stats[(column, "mean")].to_numpy(), stats[(column, "std")].fillna(0).to_numpy()
            ax.plot(alphas, mean, marker="o", ms=2.5, lw=1.4, color=colour, label=label)
            ax.fill_between(alphas, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
    reset = bool(curves["bn_reset"].any())
    axes[0].set_ylabel("held-out loss (cross-entropy)")
    axes[1].set_ylabel("held-out accuracy")
    for ax in axes:
        ax.set_xlabel("α   (0: net A, 1: net B')")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower center")
    fig.suptitle(title + (" (batch-norm statistics reset at every α)" if reset else ""), fontsize=9)
    return fig


def main(inputs, outputs, params, log):
    curves = pd.concat([pd.read_csv(p) for p in inputs.curves], ignore_index=True)
    for a, b in params.pairs:
        pair = curves[(curves["a"] == a) & (curves["b"] == b)]
        fig = draw(pair, f"Linear interpolation between seeds {a} and {b}")
        save_figure(fig, outputs_named(outputs, f"functional_lmc_{a}-{b}"), dpi=params.figures["dpi"])
    n = len(params.pairs)
    fig = draw(curves, f"Linear interpolation, mean ± std over {n} seed pair{'s' * (n > 1)}")
    save_figure(fig, outputs_named(outputs, "functional_lmc_mean"), dpi=params.figures["dpi"])
    table = barrier_table(curves)
    caption = "Loss and accuracy barriers of linear interpolation between seed pairs"
    settings = settings_of(params)
    if settings is not None:
        table = with_intervals(table, settings)
        caption += (f"; rows 'mean': lo, hi are {settings.level:.0%} bootstrap intervals over seeds (see note)")
    write_table(table, str(outputs.csv)[: -len(".csv")], float_format="{:.4f}", caption=caption)
    print(table.to_string(index=False))


def with_intervals(table: pd.DataFrame, settings) -> pd.DataFrame:
    """Interval columns of both barriers on the ``mean`` rows of :func:`barrier_table`."""
    table = table.copy()
    per_pair = table[~table["pair"].isin(["mean", "std"])]
    for column in ("loss_barrier_lo", "loss_barrier_hi", "accuracy_barrier_lo", "accuracy_barrier_hi", "note"):
        table[column] = pd.Series(dtype=object if column == "note" else float)
    for alignment, group in per_pair.groupby("alignment", sort=False):
        row = table.index[(table["pair"] == "mean") & (table["alignment"] == alignment)]
        notes = {}
        for quantity in ("loss_barrier", "accuracy_barrier"):
            values = {split_pair(p): v for p, v in zip(group["pair"], group[quantity])}
            fields = pair_fields(values, settings, quantity, fixed="held-out images fixed")
            table.loc[row, f"{quantity}_lo"] = fields["lo"]
            table.loc[row, f"{quantity}_hi"] = fields["hi"]
            notes[quantity] = fields["note"]
        table.loc[row, "note"] = merge_notes(notes)
    columns = list(table.columns)
    for quantity in ("accuracy_barrier", "loss_barrier"):
        for end in ("hi", "lo"):
            columns.remove(f"{quantity}_{end}")
            columns.insert(columns.index(quantity) + 1, f"{quantity}_{end}")
    return table[columns].assign(level=settings.level, interval=settings.label)


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

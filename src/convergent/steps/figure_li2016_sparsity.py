"""Rule `figure_li2016_sparsity`: validation loss against sparsity of the one-to-many mapping,
one figure per layer (`li2016_sparsity_{layer}`; the curves behind Table 2).

Left: loss against mean weights per unit of net b (exact non-zeros, and |w| > 0.01 as the
original counted), each point one decay. Right: both against the decay.
"""


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from convergent.plotting import outputs_named, save_figure


def plot_layer(frames: list[pd.DataFrame], layer: str):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    cx = bx.twinx()
    for frame in frames:
        f = frame.sort_values("decay")
        pair = f"{int(f.a.iloc[0])}-{int(f.b.iloc[0])}"
        ax.plot(f.nonzero, f.loss, "o-", ms=4, label=f"exact non-zeros ({pair})")
        ax.plot(f.nonzero_001, f.loss, "s--", ms=3, alpha=0.7, label=f"|w| > 0.01 ({pair})")
        for d, x, y in zip(f.decay, f.nonzero, f.loss):
            if d > 0 and np.isclose(np.log10(d) % 1, 0, atol=1e-6):  # label whole powers of ten only
                ax.annotate(f"1e{int(round(np.log10(d)))}", (x, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        positive = f[f.decay > 0]
        bx.plot(positive.decay, positive.loss, "o-", ms=4, color="tab:red", label=f"loss ({pair})")
        cx.plot(positive.decay, positive.nonzero, "s-", ms=3, color="tab:blue", label=f"non-zeros ({pair})")
        dense = f[f.decay == 0]
        if len(dense):
            bx.axhline(dense.loss.iloc[0], color="tab:red", lw=0.8, ls=":", label="loss at decay 0")
    units = int(frames[0].n_sources.iloc[0])
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.text(units, 0.5, "predicting 0", fontsize=7, ha="right", va="bottom", color="gray")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(-0.2, units * 1.5)  # symlog would otherwise open a negative axis
    ax.set_xlabel(f"mean weights per unit of net b (of {units})")
    ax.set_ylabel("validation loss (½·MSE, standardised)")
    ax.set_title(f"{layer}: loss against sparsity", fontsize=9)
    ax.legend(fontsize=7)
    bx.set_xscale("log")
    bx.set_xlabel("L1 decay")
    bx.set_ylabel("validation loss", color="tab:red")
    cx.set_ylabel("exact non-zeros per unit", color="tab:blue")
    bx.set_title(f"{layer}: along the decay grid", fontsize=9)
    handles = bx.get_legend_handles_labels()[0] + cx.get_legend_handles_labels()[0]
    bx.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="center left")
    return fig


def main(inputs, outputs, params, log):
    frames = [pd.read_csv(path) for path in inputs.csv]
    for layer in params.layers:
        mine = [f for f in frames if f.layer.iloc[0] == layer]
        if not mine:
            raise ValueError(f"layer {layer!r}: no sparse-mapping results among the inputs")
        paths = outputs_named(outputs, f"li2016_sparsity_{layer}")
        save_figure(plot_layer(mine, layer), paths, dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

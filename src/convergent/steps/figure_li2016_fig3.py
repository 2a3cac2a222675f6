"""Rule `figure_li2016_fig3`: Li et al. Fig. 3 (conv1) and Figs. 8-11 (other layers), every layer.

For every live unit of net a, the correlation with its semi-matching partner and with its
bipartite-matching partner in net b, units sorted by decreasing semi-matching correlation
(first seed pair). One figure file per layer: ``li2016_fig3_{layer}``.
"""


import matplotlib.pyplot as plt
import numpy as np

from convergent.matching import read_match_csv, summarize_match
from convergent.plotting import outputs_named, save_figure


def plot(frame, layer: str, a: int, b: int):
    live = frame[~frame["dead_a"]].sort_values("semi_value", ascending=False, kind="stable")
    s = summarize_match(frame)
    rank = np.arange(len(live))
    fig, ax = plt.subplots(figsize=(6, 3.4), constrained_layout=True)
    ax.plot(rank, live["semi_value"], "o-", ms=3, lw=1, label=f"semi-matching (mean {s['semi']:.3f})")
    ax.plot(rank, live["match_value"], "s", ms=3, alpha=0.7, label=f"matching (mean {s['matching']:.3f})")
    matched = live["match_partner"].to_numpy() >= 0
    differ = ~live["coincide"].to_numpy() & matched
    ax.plot(rank[differ], live["match_value"].to_numpy()[differ], "x", color="tab:red", ms=4,
            label=f"partners differ ({differ.sum()} of {len(live)})")
    ax.set_xlabel(f"unit of net {a}, sorted by semi-matching correlation")
    ax.set_ylabel(f"correlation with partner in net {b}")
    low = np.nanmin(live[["semi_value", "match_value"]].to_numpy()) if len(live) else 0.0
    ax.set_ylim(min(0.0, float(low)) - 0.05, 1.02)
    dead = f"; dead units: {s['dead_a']} in net {a}, {s['dead_b']} in net {b}" if s["dead_a"] + s["dead_b"] else ""
    # With fewer live units in b than in a, the one-to-one matching must leave some a units out.
    unmatched = f"; {int((~matched).sum())} left unmatched" if (~matched).any() else ""
    ax.set_title(f"{layer}: overlap {s['overlap']:.1%}{dead}{unmatched}", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    return fig


def main(inputs, outputs, params, log):
    a, b = params.pair
    for layer, path in zip(params.layers, inputs.matching, strict=True):
        fig = plot(read_match_csv(path), layer, a, b)
        save_figure(fig, outputs_named(outputs, f"li2016_fig3_{layer}"), dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

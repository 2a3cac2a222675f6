"""Rule `figure_li2016_fig7`: joint activations of high- and low-correlation unit pairs (Li §6.1).

For the best and the worst semi-matched units of net a (with their partners in net b, first seed
pair), the 2-D histogram of the paired activations over all sampled images and positions (log
colour scale). One figure file per layer: ``li2016_fig7_{layer}``.
"""

import matplotlib.pyplot as plt
import numpy as np

from convergent.activations import check_paired, iter_sample_chunks
from convergent.matching import extremes, frame_matches, read_match_csv
from convergent.plotting import outputs_named, save_figure


def columns(path, layer: str, units: list[int]) -> np.ndarray:
    """Only the wanted units' activations, streamed, so the whole layer is never in memory."""
    return np.concatenate([np.asarray(c[:, units], dtype=np.float64) for c in iter_sample_chunks(path, layer, 65536)])


def plot(path_a, path_b, matching, layer: str, n: int, a: int, b: int):
    check_paired([path_a, path_b], layer)
    semi, _ = frame_matches(read_match_csv(matching))
    best, worst = extremes(semi, n)
    chosen = [("high", u) for u in best] + [("low", u) for u in worst[::-1]]
    xa = columns(path_a, layer, [int(u) for _, u in chosen])
    xb = columns(path_b, layer, [int(semi.partner[u]) for _, u in chosen])
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.9 * len(chosen), 3), constrained_layout=True, squeeze=False)
    for i, (ax, (kind, u)) in enumerate(zip(axes[0], chosen)):
        counts, xedges, yedges = np.histogram2d(xa[:, i], xb[:, i], bins=60)
        # log10 counts on a plain scale: a LogNorm colorbar's mathtext labels cost seconds per figure.
        shown = np.ma.masked_equal(counts, 0)
        # A raster image, not a mesh of quads: far cheaper to write as PDF.
        image = ax.imshow(np.ma.log10(shown).T, origin="lower", aspect="auto", interpolation="nearest",
                          extent=(xedges[0], xedges[-1], yedges[0], yedges[-1]), cmap="viridis", vmin=0)
        ax.set_title(f"{kind}: r = {semi.value[u]:.2f}", fontsize=9)
        ax.set_xlabel(f"net {a} unit {u}", fontsize=8)
        ax.set_ylabel(f"net {b} unit {semi.partner[u]}", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=axes[0, -1], label="log10 samples")
    fig.suptitle(f"{layer}: paired activations over {len(xa)} samples, best and worst semi-matched units", fontsize=9)
    return fig


def main(inputs, outputs, params, log):
    a, b = params.pair
    for layer, matching in zip(params.layers, inputs.matching, strict=True):
        fig = plot(inputs.act_a, inputs.act_b, matching, layer, params.cfg["scatter_pairs"], a, b)
        save_figure(fig, outputs_named(outputs, f"li2016_fig7_{layer}"), dpi=params.figures["dpi"])


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Figure helpers shared by the figure steps: one matplotlib figure saved to every requested format."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files, never shown; no display on cluster nodes

import matplotlib.pyplot as plt  # noqa: E402

from convergent.outputs import atomic_output  # noqa: E402


def save_figure(fig, paths: Iterable[str | os.PathLike], dpi: int = 150) -> None:
    """Save ``fig`` to each path (the extension picks the format; each file atomically) and close it."""
    for path in paths:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def outputs_named(outputs: Iterable[str | os.PathLike], stem: str) -> list[str]:
    """The paths among a job's ``outputs`` (one per format) of the figure named ``stem``.

    Steps that draw several figures in one job (one per layer) pick each figure's files this way.
    """
    paths = [str(p) for p in outputs if Path(str(p)).stem == stem]
    if not paths:
        raise ValueError(f"no output path for figure {stem!r}")
    return paths


def matrix_image(ax, matrix, title: str, vmin=None, vmax=None, cmap="gray"):
    """A matrix shown as in Li et al. Fig. 1: minimum black, maximum white, NaN (dead) in red."""
    cmap = plt.get_cmap(cmap).with_extremes(bad="tab:red")
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    return image

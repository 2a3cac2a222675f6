"""The text analogue of Li et al.'s patch figures: a unit shown by the tokens where it fires most.

For an image network a unit is shown by the probe-image patches of its strongest activations
(Fig. 2/4). For a language model the same records (``top_activations``: passage, token, value)
point at token occurrences, shown in context: the token in [brackets] with a few tokens either
side. :func:`plot_token_matches` draws the best- and worst-matched units of net a next to their
partners in net b, each by its strongest occurrences.
"""

from __future__ import annotations

import numpy as np

from convergent.text import token_context


def unit_contexts(tokens: list[list[str | None]], records: np.ndarray, n: int, width: int) -> list[str]:
    """The ``n`` strongest occurrences of one unit (``records``: its top_activations row) in context."""
    out = []
    for record in records[:n]:
        if not np.isfinite(record["value"]):
            continue  # fewer real tokens than records (a tiny probe set)
        out.append(f"{record['value']:+.2f}  " + token_context(tokens[int(record["image"])], int(record["y"]), width))
    return out


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def plot_token_matches(tokens, top_a, top_b, semi, best, worst, *, layer: str, measure: str, pair,
                       n_contexts: int = 3, width: int = 4):
    """A figure: two panels (best, worst matched units of net a), each unit a block of its own
    strongest token contexts (left, net a) and its partner's (right, net b)."""
    import matplotlib.pyplot as plt

    a, b = pair
    value_name = "r" if measure == "correlation" else "MI"
    lines_per_unit = n_contexts + 1
    rows = max(len(best), len(worst)) * lines_per_unit
    fig, axes = plt.subplots(1, 2, figsize=(16, 0.17 * rows + 1.2), constrained_layout=True)
    for ax, (label, chosen) in zip(axes, (("best", best), ("worst", worst))):
        ax.set_axis_off()
        ax.set_title(f"{len(chosen)} {label} by {measure}: net {a} (left) | net {b} (right)", fontsize=9)
        y = 1.0
        step = 1.0 / max(rows, 1)
        for u in chosen:
            p = int(semi.partner[u])
            ax.text(0.0, y, f"unit {u} → {p}   {value_name} {semi.value[u]:.2f}", fontsize=7, fontweight="bold",
                    va="top", transform=ax.transAxes)
            y -= step
            left = unit_contexts(tokens, top_a[u], n_contexts, width)
            right = unit_contexts(tokens, top_b[p], n_contexts, width)
            for i in range(n_contexts):
                for x, side in ((0.0, left), (0.51, right)):
                    if i < len(side):
                        ax.text(x, y, _clip(side[i], 70), fontsize=6, family="monospace", va="top",
                                transform=ax.transAxes)
                y -= step
    fig.suptitle(f"{layer}: semi-matching by {measure}; each unit shown by its {n_contexts} strongest token "
                 f"occurrences in the probe text, [token] with {width} tokens either side", fontsize=9)
    return fig


def token_match_table(tokens, top_a, top_b, semi, chosen, n_contexts: int = 3, width: int = 4):
    """Rows (unit, partner, value, contexts in a, contexts in b) for a report table."""
    import pandas as pd

    return pd.DataFrame([{"unit": int(u), "partner": int(semi.partner[u]), "value": float(semi.value[u]),
                          "net_a": " | ".join(unit_contexts(tokens, top_a[u], n_contexts, width)),
                          "net_b": " | ".join(unit_contexts(tokens, top_b[int(semi.partner[u])], n_contexts, width))}
                         for u in chosen])

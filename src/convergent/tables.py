"""Tables in three forms from one DataFrame: CSV for machines, Markdown for the README and the
report, LaTeX for papers."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def write_table(df: pd.DataFrame, stem: str | os.PathLike, float_format: str = "{:.3f}",
                caption: str | None = None) -> list[Path]:
    """Write ``stem.csv``, ``stem.md`` and ``stem.tex``; returns the three paths.

    The CSV keeps full precision; Markdown and LaTeX are rounded with ``float_format``.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(s) for s in (".csv", ".md", ".tex")]
    df.to_csv(paths[0], index=False)
    shown = df.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else float_format.format(v))
    paths[1].write_text(shown.to_markdown(index=False) + "\n")
    latex = shown.to_latex(index=False, caption=caption, escape=True)
    paths[2].write_text(latex)
    return paths

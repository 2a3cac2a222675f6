"""Tables in three forms from one DataFrame: CSV for machines, Markdown for the README and the
report, LaTeX for papers."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from convergent.outputs import atomic_output


def write_table(df: pd.DataFrame, stem: str | os.PathLike, float_format: str = "{:.3f}",
                caption: str | None = None) -> list[Path]:
    """Write ``stem.csv``, ``stem.md`` and ``stem.tex`` (each atomically); returns the three paths.

    The CSV keeps full precision; Markdown and LaTeX are rounded with ``float_format``.
    """
    stem = Path(stem)
    paths = [stem.with_name(stem.name + s) for s in (".csv", ".md", ".tex")]
    with atomic_output(paths[0]) as tmp:
        df.to_csv(tmp, index=False)
    shown = df.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else float_format.format(v))
    with atomic_output(paths[1]) as tmp:
        tmp.write_text(shown.to_markdown(index=False) + "\n")
    with atomic_output(paths[2]) as tmp:
        tmp.write_text(shown.to_latex(index=False, caption=caption, escape=True))
    return paths

"""Tables in three forms from one DataFrame: CSV for machines, Markdown for the README and the
report, LaTeX for papers.

The CSV keeps every column, one value per cell, so a program can filter on any of them. The
Markdown and LaTeX forms are read by people, and a sentence repeated in every row (what an
interval was resampled over, its level) makes them too wide to read: those columns
(:data:`NOTE_COLUMNS`) are written once under the table instead, as numbered notes that the rows
point to (``[1]``) when they differ between rows, as one line when they do not. Interval columns
that are empty in every row (one seed pair: none is possible) are left out there too.

>>> df = pd.DataFrame({"layer": ["conv1", "conv2"], "lo": [0.1, 0.2], "level": [0.95, 0.95],
...                    "note": ["over seeds (4 seeds)", "over seeds (4 seeds)"]})
>>> print(markdown(df))
| layer   |   lo |
|:--------|-----:|
| conv1   |  0.1 |
| conv2   |  0.2 |
<BLANKLINE>
level: 0.95; note: over seeds (4 seeds)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from convergent.outputs import atomic_output

__all__ = ["NOTE_COLUMNS", "write_table", "markdown", "split_notes"]

#: columns that describe how a row's numbers were made rather than being numbers: ``note`` and
#: ``*_note``, and a table's ``level`` and ``interval``
NOTE_COLUMNS = re.compile(r"^(.*_)?note$|^level$|^interval$")


def split_notes(shown: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``shown`` without its note columns, plus the lines that carry them: a column with one value
    (or none) becomes ``name: value``; one whose value differs between rows becomes a column of
    markers ``[k]`` (named as before) and the numbered lines ``[k] value``, numbered across the
    table so equal texts share a number."""
    columns = [c for c in shown.columns if NOTE_COLUMNS.match(str(c))]
    constant, numbers = [], {}
    table = shown.drop(columns=columns)
    varying = []
    for column in columns:
        values = [v for v in shown[column] if not _blank(v)]
        if len(set(map(str, values))) <= 1:
            if values:
                constant.append(f"{column}: {values[0]}")
            continue
        varying.append(column)
    for column in varying:
        markers = []
        for v in shown[column]:
            if _blank(v):
                markers.append("")
                continue
            numbers.setdefault(str(v), len(numbers) + 1)
            markers.append(f"[{numbers[str(v)]}]")
        table[column] = markers
    lines = (["; ".join(constant)] if constant else []) + [f"[{k}] {text}" for text, k in numbers.items()]
    return table, lines


#: interval columns (``lo``, ``matching_hi``, ``conv1 loss lo``): left out of Markdown and LaTeX
#: when no row has one (one seed pair), where the note says why
INTERVAL_COLUMNS = re.compile(r"(^|[_ ])(lo|hi)$")


def _without_empty_intervals(df: pd.DataFrame) -> pd.DataFrame:
    empty = [c for c in df.columns if INTERVAL_COLUMNS.search(str(c)) and df[c].isna().all()]
    return df.drop(columns=empty)


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == ""


def _rounded(df: pd.DataFrame, float_format: str) -> pd.DataFrame:
    shown = df.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else float_format.format(v))
    return shown


def markdown(df: pd.DataFrame, float_format: str = "{:.3f}") -> str:
    """The Markdown form: rounded, note columns as lines under the table (:func:`split_notes`),
    interval columns empty in every row left out."""
    table, lines = split_notes(_without_empty_intervals(df))
    text = _rounded(table, float_format).to_markdown(index=False)
    return text + ("\n\n" + "\n\n".join(lines) if lines else "")


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def latex(df: pd.DataFrame, float_format: str = "{:.3f}", caption: str | None = None) -> str:
    """The LaTeX form: note columns as a small paragraph under the tabular, inside the table;
    the caption escaped."""
    table, lines = split_notes(_without_empty_intervals(df))
    # pandas escapes the cells but not the caption, and captions say "95%": a LaTeX comment
    text = _rounded(table, float_format).to_latex(index=False, escape=True,
                                                  caption=None if caption is None else _latex_escape(caption))
    if not lines:
        return text
    notes = "\\par\\footnotesize\n" + "\\\\\n".join(_latex_escape(line) for line in lines) + "\n"
    end = "\\end{table}" if "\\end{table}" in text else None
    return text.replace(end, notes + end) if end else text + notes


def write_table(df: pd.DataFrame, stem: str | os.PathLike, float_format: str = "{:.3f}",
                caption: str | None = None) -> list[Path]:
    """Write ``stem.csv``, ``stem.md`` and ``stem.tex`` (each atomically); returns the three paths.

    The CSV keeps full precision and every column; Markdown and LaTeX are rounded with
    ``float_format`` and carry the note columns under the table (:func:`split_notes`).
    """
    stem = Path(stem)
    paths = [stem.with_name(stem.name + s) for s in (".csv", ".md", ".tex")]
    with atomic_output(paths[0]) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_output(paths[1]) as tmp:
        tmp.write_text(markdown(df, float_format) + "\n")
    with atomic_output(paths[2]) as tmp:
        tmp.write_text(latex(df, float_format, caption))
    return paths

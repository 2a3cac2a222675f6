"""convergent.tables: the CSV keeps every column; Markdown and LaTeX carry the note columns once,
under the table, as one line when a note is the same in every row and as numbered notes the rows
point to when it differs."""

import doctest

import numpy as np
import pandas as pd

from convergent import tables


def _frame():
    return pd.DataFrame({
        "layer": ["conv1", "conv2", "fc1"],
        "mean": [0.51234, 0.6, np.nan],
        "lo": [0.4, 0.5, np.nan],
        "level": [0.95] * 3,
        "interval": ["percentile, 1000 replicates"] * 3,
        "note": ["over seeds and inputs (4 seeds, 100 input blocks)"] * 2 + ["over seeds (4 seeds); inputs fixed"],
        "baseline_note": ["over seeds (4 seeds); inputs fixed", "", "over inputs only (100 input blocks)"],
        "notes_count": [1, 2, 3],  # not a note column: the name only starts like one
    })


def test_docstring_examples():
    assert doctest.testmod(tables).failed == 0


def test_csv_keeps_every_column_and_markdown_puts_notes_under_the_table(tmp_path):
    df = _frame()
    csv, md, tex = tables.write_table(df, tmp_path / "t", caption="A caption with 5% of x_y")
    back = pd.read_csv(csv)
    assert list(back.columns) == list(df.columns)
    assert back["note"].tolist() == df["note"].tolist()
    text = md.read_text()
    table, _, notes = text.partition("\n\n")
    header = table.splitlines()[0]
    assert "level" not in header and "interval" not in header and "notes_count" in header
    # the varying note columns keep their place as short markers; equal texts share a number
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    cols = [c.strip() for c in header.strip("|").split("|")]
    note, base = cols.index("note"), cols.index("baseline_note")
    assert [r[note] for r in rows] == ["[1]", "[1]", "[2]"]
    assert [r[base] for r in rows] == ["[2]", "", "[3]"]
    lines = [line for line in notes.splitlines() if line]
    assert lines == ["level: 0.95; interval: percentile, 1000 replicates",
                     "[1] over seeds and inputs (4 seeds, 100 input blocks)",
                     "[2] over seeds (4 seeds); inputs fixed",
                     "[3] over inputs only (100 input blocks)"]
    assert text.count("over seeds and inputs") == 1
    latex = tex.read_text()
    assert latex.index("\\end{tabular}") < latex.index("[1] over seeds and inputs") < latex.index("\\end{table}")
    assert "5\\% of x\\_y" in latex and "level: 0.95; interval: percentile, 1000 replicates" in latex


def test_a_table_without_notes_is_unchanged():
    df = pd.DataFrame({"layer": ["conv1"], "value": [0.25]})
    assert tables.markdown(df) == df.assign(value=["0.250"]).to_markdown(index=False)


def test_interval_columns_empty_in_every_row_are_left_out_of_markdown_only(tmp_path):
    df = pd.DataFrame({"decay": [0.0, 0.1], "conv1 loss": [0.1, 0.2], "conv1 loss lo": [np.nan, np.nan],
                       "conv1 loss hi": [np.nan, np.nan], "matching_lo": [0.1, np.nan], "hole": [np.nan, np.nan],
                       "note": ["one seed pair and no input resampling: no interval"] * 2})
    csv, md, tex = tables.write_table(df, tmp_path / "t")
    assert list(pd.read_csv(csv).columns) == list(df.columns)
    header = md.read_text().splitlines()[0]
    assert "conv1 loss lo" not in header and "conv1 loss hi" not in header
    assert "matching_lo" in header and "hole" in header  # partly filled, or not an interval column
    assert "conv1 loss lo" not in tex.read_text()

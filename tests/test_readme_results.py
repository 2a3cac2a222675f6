"""The README's results section is generated from a run's tables (issue 16): every number in it
comes from a table, the recorded environment or the papers' quoted values, never from the text."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import SRC
from convergent.readme_results import BEGIN, END, PAPERS, environment, results_section, update_readme

pytestmark = pytest.mark.workflow

# a number standing alone: not the digits of a name (conv1, li2016_table1, top8_same, x11)
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")


def _numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


def _without_environment(text: str, out) -> str:
    """The text after its first paragraph, which names the environment; that paragraph must hold
    no number but the recorded environment's (versions, Python, the date the tables were made,
    threads per job)."""
    env, day = environment(out)
    head, rest = text.split("\n\n", 1)
    for s in sorted([day, env["python"], *[v for v in env["packages"].values() if v]], key=len, reverse=True):
        head = head.replace(s, "")
    assert _numbers(head) == [str(env["torch"]["threads"])], f"numbers in the environment paragraph: {_numbers(head)}"
    return rest


def _sources(tables) -> np.ndarray:
    """Every value the text may show: numeric cells (and as percentages), numbers written inside
    text cells and column names, and the papers' values."""
    values = [float(v) for paper in PAPERS.values() for v in np.atleast_1d(paper)]
    for path in tables.glob("*.csv"):
        frame = pd.read_csv(path)
        for column in frame.columns:
            values += [float(v) for v in _numbers(str(column))]
            cells = pd.to_numeric(frame[column], errors="coerce")
            numeric = cells[cells.notna()].to_numpy(float)
            values += list(numeric) + list(100 * numeric)
            for text in frame[column][cells.isna()].dropna().astype(str):
                values += [float(v) for v in _numbers(text)]
    return np.unique(np.array(values))


def _labels(tables) -> set[str]:
    labels = set()
    for path in tables.glob("*.csv"):
        frame = pd.read_csv(path, dtype=str)
        for column in frame.columns:
            labels |= {t for cell in frame[column].dropna() for t in _numbers(cell) if not _is_number(cell)}
    return labels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return not re.fullmatch(r"-?\d+(\.\d+)?e[-+]?\d+", text)  # 1.00e-05 is a label as the tables write it


def _explained(token: str, sources: np.ndarray) -> bool:
    decimals = len(token.split(".")[1].split("e")[0]) if "." in token else 0
    value = float(token)
    return bool(np.any(np.abs(sources - value) <= 0.5 * 10.0 ** -decimals + 1e-12))


def _perturbed_copy(out, destination):
    """The run with every non-integer table value moved by an order-preserving affine map, so a
    number taken from a table changes and a number typed into the text does not."""
    copy = destination / "run"
    shutil.copytree(out / "models", copy / "models")
    (copy / "tables").mkdir(parents=True)
    for path in (out / "tables").glob("*.csv"):
        frame = pd.read_csv(path, dtype={"decay": str})
        for column in frame.columns:
            values = frame[column]
            if pd.api.types.is_float_dtype(values):
                frame[column] = values * 1.0137 + 0.00731
        frame.to_csv(copy / "tables" / path.name, index=False)
    return copy


@pytest.fixture(scope="module")
def out(tiny_run):
    return tiny_run / "results" / "tiny"


def test_every_number_in_the_results_section_comes_from_the_run(out, tmp_path):
    text = results_section(out)
    env, day = environment(out)
    assert env["packages"]["torch"] in text and env["packages"]["numpy"] in text and env["cpu"] in text
    assert day in text and re.fullmatch(r"\d{4}-\d\d-\d\d", day)
    for heading in ("**Networks.**", "**Li et al. Table 1**", "**Trained vs untrained**", "**Li et al. Table 2**",
                    "**Wang et al.**", "**Functional equivalence**", "**Beside the papers**"):
        assert heading in text, f"{heading} missing: the tiny run makes every table the section reads"

    sources = _sources(out / "tables")
    tokens = _numbers(_without_environment(text, out))
    unexplained = [t for t in tokens if not _explained(t, sources)]
    assert len(tokens) > 100 and not unexplained, f"numbers in no table: {unexplained}"

    # the same text from tables whose values all moved: each number with decimals must move too
    moved = results_section(_perturbed_copy(out, tmp_path))
    moved_tokens = _numbers(_without_environment(moved, out))
    assert len(moved_tokens) == len(tokens), "the perturbation changed the text's shape: make it smaller"
    labels = _labels(out / "tables")  # numbers written as text (Table 2's decays): not moved
    constant = [t for t, m in zip(tokens, moved_tokens) if "." in t and t == m and t not in labels]
    assert not constant, f"numbers that do not follow the tables (typed into the text?): {constant}"


def test_a_number_typed_into_the_text_is_caught(out, tmp_path):
    # the checks above, on a section with one number that no table holds
    text = results_section(out).replace("**Networks.**", "**Networks.** (about 0.8765 of the paper's)")
    sources = _sources(out / "tables")
    assert not _explained("0.8765", sources)
    assert [t for t in _numbers(_without_environment(text, out)) if not _explained(t, sources)] == ["0.8765"]


def test_update_readme_replaces_only_the_marked_section(out, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{BEGIN}\nold numbers 0.5\n{END}\n\nafter\n")
    section = results_section(out)
    assert update_readme(readme, section) is True
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n" + BEGIN + "\n") and text.endswith(f"\n{END}\n\nafter\n")
    assert "old numbers" not in text and section.strip() in text
    assert update_readme(readme, section) is False  # already current
    command = [sys.executable, "-m", "convergent", "results-readme", str(out), "--readme", str(readme), "--check"]
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    assert subprocess.run(command, env=env, capture_output=True, text=True).returncode == 0
    readme.write_text(text.replace(section.strip(), "hand-edited"))
    checked = subprocess.run(command, env=env, capture_output=True, text=True)
    assert checked.returncode == 1 and "differs" in checked.stdout
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="results:begin"):
        update_readme(tmp_path / "bare.md", section)


def test_the_repository_readme_has_the_markers():
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.index(BEGIN) < text.index(END)


def test_tables_are_read_by_column_name(out, tmp_path):
    # other columns (intervals added to more tables, notes) and another column order change nothing
    copy = tmp_path / "run"
    shutil.copytree(out / "models", copy / "models")
    (copy / "tables").mkdir(parents=True)
    for path in (out / "tables").glob("*.csv"):
        frame = pd.read_csv(path, dtype={"decay": str})
        frame = frame[list(reversed(frame.columns))]
        frame["an_added_column"] = 0.123456
        frame.to_csv(copy / "tables" / path.name, index=False)
    assert results_section(copy) == results_section(out).replace(*_date_of(out, copy))


def _date_of(out, copy):
    return environment(out)[1], environment(copy)[1]


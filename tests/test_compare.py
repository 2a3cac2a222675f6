"""`convergent compare RUN_A RUN_B`: per-table differences within tolerances, and the environments."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from convergent.cli import main as convergent
from convergent.compare import compare_frames
from convergent.provenance import environment
from convergent.tables import write_table


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "a" / "results" / "x"
    write_table(pd.DataFrame({"layer": ["conv1", "fc1"], "mean": [0.63512345678, 0.58], "units": [16, 128],
                                   "train_seconds": [1.0, 2.0]}),
                out / "tables" / "li2016_table1")
    write_table(pd.DataFrame({"layer": ["conv1"], "value": [np.nan]}), out / "tables" / "other")
    (out / "models").mkdir()
    for seed, accuracy in ((0, 0.971), (1, 0.975)):
        (out / "models" / f"seed{seed}.json").write_text(json.dumps(
            {"heldout_accuracy": accuracy, "environment": environment("cpu")}))
    return out


def _compare(capsys, *args):
    status = convergent(["compare", *map(str, args)])
    return status, capsys.readouterr().out.splitlines()


def test_a_copy_has_no_differences(run, tmp_path, capsys):
    copy = shutil.copytree(run, tmp_path / "b")
    status, lines = _compare(capsys, run, copy)
    assert status == 0 and lines == ["environments: the same",
                                     "0 of 4 tables and accuracies differ beyond rtol 1e-09, atol 1e-12"]


def test_moved_numbers_are_reported_per_table_and_column(run, tmp_path, capsys):
    other = shutil.copytree(run, tmp_path / "b")
    table = pd.read_csv(other / "tables" / "li2016_table1.csv")
    table.loc[0, "mean"] = 0.632
    table["train_seconds"] *= 3  # wall time is not a result
    table.to_csv(other / "tables" / "li2016_table1.csv", index=False)
    (other / "tables" / "other.csv").unlink()
    metrics = json.loads((other / "models" / "seed1.json").read_text())
    metrics["heldout_accuracy"] = 0.969
    metrics["environment"]["packages"]["numpy"] = "0.0.1"
    (other / "models" / "seed1.json").write_text(json.dumps(metrics))
    status, lines = _compare(capsys, run, other)
    assert status == 1
    assert lines[0] == f"environments: numpy {np.__version__} against 0.0.1"
    assert lines[1] == "tables/li2016_table1.csv: differs in mean (1 cells, max |diff| 0.00312)"
    assert lines[2] == f"tables/other.csv: missing in {other}"
    assert lines[3] == "models/seed1.json: differs in heldout_accuracy (1 cells, max |diff| 0.006)"
    assert lines[4].startswith("3 of 4 ")
    # within a looser tolerance only the missing table remains
    status, lines = _compare(capsys, run, other, "--atol", "0.01")
    assert status == 1 and lines[1:] == [f"tables/other.csv: missing in {other}",
                                         "1 of 4 tables and accuracies differ beyond rtol 1e-09, atol 0.01"]


def test_frames_against_a_loop():
    rng = np.random.default_rng(1)
    a = pd.DataFrame({"k": list("abcdef"), "v": rng.normal(size=6), "w": rng.normal(size=6)})
    b = a.copy()
    b.loc[[1, 4], "v"] += [1e-3, -2e-3]
    b.loc[2, "k"] = "z"
    found = compare_frames("t", a, b, rtol=0, atol=1e-4)
    beyond = [i for i in range(6) if abs(a.v[i] - b.v[i]) > 1e-4]
    assert found.columns["v"] == (len(beyond), max(abs(a.v[i] - b.v[i]) for i in beyond))
    assert found.columns["k"][0] == 1 and "w" not in found.columns
    assert compare_frames("t", a, b.iloc[:5], 0, 0).problem == "6 rows against 5"

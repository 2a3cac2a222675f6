"""Comparing two runs of an experiment: which tables and accuracies differ, by how much, and
in which environments they were made (``convergent compare RUN_A RUN_B``).

Numbers are compared with ``numpy.isclose`` semantics (``|a - b| <= atol + rtol * |b|``, NaN equal
to NaN), so a run on the same machine and packages shows no difference at the default tolerances,
and a run elsewhere shows how far each table moved.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


# wall-clock columns (train_seconds, ...) measure the machine's load, not the results
TIMING = re.compile(r"seconds|(^|_)time($|_)|elapsed")


@dataclass
class TableDifference:
    name: str  # tables/<name>.csv, or models/<net>.json
    problem: str = ""  # the table cannot be compared (missing, other rows or columns)
    columns: dict[str, tuple[int, float]] = field(default_factory=dict)  # column -> (cells beyond, max |diff|)

    @property
    def differs(self) -> bool:
        return bool(self.problem or self.columns)

    def __str__(self) -> str:
        if self.problem:
            return f"{self.name}: {self.problem}"
        parts = [f"{column} ({cells} cells, max |diff| {diff:.3g})" for column, (cells, diff) in self.columns.items()]
        return f"{self.name}: differs in " + ", ".join(parts)


def compare_frames(name: str, a, b, rtol: float, atol: float) -> TableDifference:
    """Cell by cell: numeric columns within the tolerances, the others equal; timings skipped."""
    result = TableDifference(name)
    if list(a.columns) != list(b.columns):
        result.problem = f"other columns ({sorted(set(a.columns) ^ set(b.columns))} in one run only)"
        return result
    if len(a) != len(b):
        result.problem = f"{len(a)} rows against {len(b)}"
        return result
    for column in a.columns:
        if TIMING.search(str(column)):
            continue
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number):
            x, y = x.astype(np.float64), y.astype(np.float64)
            beyond = ~np.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
            if beyond.any():
                result.columns[column] = (int(beyond.sum()), float(np.nanmax(np.abs(x - y)[beyond])))
        elif not np.array_equal(x.astype(str), y.astype(str)):
            result.columns[column] = (int((x.astype(str) != y.astype(str)).sum()), float("nan"))
    return result


def _accuracies(run: Path) -> dict[str, float | None]:
    found = {}
    for path in sorted((run / "models").glob("*.json")):
        found[path.stem] = json.loads(path.read_text()).get("heldout_accuracy")
    return found


def _environments(run: Path) -> dict[str, dict]:
    return {path.stem: env for path in sorted((run / "models").glob("*.json"))
            if (env := json.loads(path.read_text()).get("environment"))}


def _differences(a: dict, b: dict) -> list[str]:
    lines = []
    for package in sorted(set(a["packages"]) | set(b["packages"])):
        va, vb = a["packages"].get(package), b["packages"].get(package)
        if va != vb:
            lines.append(f"{package} {va} against {vb}")
    for key in ("python", "platform", "cpu", "device"):
        if a.get(key) != b.get(key):
            lines.append(f"{key} {a.get(key)} against {b.get(key)}")
    gpu_a, gpu_b = (a.get("torch") or {}).get("gpu"), (b.get("torch") or {}).get("gpu")
    if gpu_a != gpu_b:
        lines.append(f"gpu {gpu_a} against {gpu_b}")
    return lines


def environment_differences(run_a: Path, run_b: Path) -> list[str]:
    """How the environments recorded in two runs' model JSONs differ, network by network
    (package versions, CPU, device, platform, GPU); a run made before the record says so."""
    envs_a, envs_b = _environments(run_a), _environments(run_b)
    if not envs_a or not envs_b:
        missing = [str(run) for run, envs in ((run_a, envs_a), (run_b, envs_b)) if not envs]
        return [f"no environment recorded in {', '.join(missing)} (made before convergent recorded it)"]
    lines = []
    for net in sorted(set(envs_a) & set(envs_b)):
        lines += [line for line in _differences(envs_a[net], envs_b[net]) if line not in lines]
    return lines


def compare_runs(run_a: str | os.PathLike, run_b: str | os.PathLike, rtol: float = 1e-9,
                 atol: float = 1e-12) -> tuple[list[TableDifference], int]:
    """Every table (``tables/*.csv``) and every network's held-out accuracy of two runs
    (``results/<experiment>`` directories); returns the differences and how many were compared."""
    import pandas as pd

    run_a, run_b = Path(run_a), Path(run_b)
    names = sorted({p.name for p in (run_a / "tables").glob("*.csv")} | {p.name for p in (run_b / "tables").glob("*.csv")})
    differences = []
    for name in names:
        path_a, path_b = run_a / "tables" / name, run_b / "tables" / name
        missing = [str(run) for run, path in ((run_a, path_a), (run_b, path_b)) if not path.is_file()]
        if missing:
            differences.append(TableDifference(f"tables/{name}", f"missing in {', '.join(missing)}"))
            continue
        found = compare_frames(f"tables/{name}", pd.read_csv(path_a), pd.read_csv(path_b), rtol, atol)
        if found.differs:
            differences.append(found)
    acc_a, acc_b = _accuracies(run_a), _accuracies(run_b)
    for net in sorted(set(acc_a) | set(acc_b)):
        a, b = acc_a.get(net), acc_b.get(net)
        if net not in acc_a or net not in acc_b:
            differences.append(TableDifference(f"models/{net}.json", "in one run only"))
        elif (a is None) != (b is None) or (a is not None and not np.isclose(a, b, rtol=rtol, atol=atol)):
            diff = float("nan") if a is None or b is None else abs(a - b)
            differences.append(TableDifference(f"models/{net}.json", columns={"heldout_accuracy": (1, diff)}))
    return differences, len(names) + len(set(acc_a) | set(acc_b))

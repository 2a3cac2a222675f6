"""convergent.step_code: the library modules a step runs, and their digest (the rerun trigger)."""

import shutil
from modulefinder import ModuleFinder
from pathlib import Path

import pytest

from conftest import SRC
from convergent.step_code import code_digest, library_modules

STEPS = sorted(p for p in (SRC / "convergent" / "steps").glob("*.py") if p.name not in ("__init__.py", "common.py"))


def _package(root: Path) -> Path:
    """A small package `convergent` with every kind of import the helper must follow."""
    pkg = root / "convergent"
    (pkg / "steps").mkdir(parents=True)
    files = {
        "__init__.py": '__version__ = "0"\n',
        "a.py": "import numpy as np\nfrom convergent.b import f\n",
        "b.py": "def f():\n    from convergent import c  # only when called\n    return c\n",
        "c.py": "import convergent.d as d\n",
        "d.py": "X = 1\n",
        "unused.py": "from convergent import a\n",
        "steps/__init__.py": "",
        "steps/common.py": "import os\n",
        "steps/one.py": "from convergent.a import f\n\nif __name__ == '__main__':\n"
                        "    from convergent.steps.common import run_step\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    return pkg / "steps" / "one.py"


def test_follows_imports_transitively_in_function_bodies_and_packages(tmp_path):
    step = _package(tmp_path)
    assert library_modules(step, tmp_path) == ["convergent", "convergent.a", "convergent.b", "convergent.c",
                                               "convergent.d", "convergent.steps", "convergent.steps.common"]


def test_digest_changes_with_content_only(tmp_path):
    step = _package(tmp_path / "here")
    before = code_digest(step, tmp_path / "here")
    shutil.copytree(tmp_path / "here", tmp_path / "moved")  # another path, new mtimes
    assert code_digest(tmp_path / "moved" / "convergent" / "steps" / "one.py", tmp_path / "moved") == before
    (tmp_path / "here" / "convergent" / "unused.py").write_text("# not imported by the step\n")
    assert code_digest(step, tmp_path / "here") == before
    (tmp_path / "here" / "convergent" / "d.py").write_text("X = 2\n")
    after = code_digest(step, tmp_path / "here")
    assert {m for m in before if before[m] != after[m]} == {"convergent.d"}


def test_relative_imports_are_refused(tmp_path):
    step = _package(tmp_path)
    (tmp_path / "convergent" / "d.py").write_text("from . import c\n")
    with pytest.raises(ValueError, match="d.py: relative imports"):
        library_modules(step, tmp_path)


@pytest.mark.parametrize("step", STEPS, ids=lambda p: p.stem)
def test_every_step_agrees_with_modulefinder(step):
    """The standard library's modulefinder (compiled bytecode, not the syntax tree) finds the
    same `convergent` modules."""
    finder = ModuleFinder(path=[str(SRC)])
    finder.run_script(str(step))
    expected = sorted(n for n in finder.modules if n == "convergent" or n.startswith("convergent."))
    assert library_modules(step) == expected

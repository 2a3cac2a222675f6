"""The library code a step runs, as a rerun trigger that survives moving the project.

A job's result depends on its step script and on every ``convergent`` module that script imports,
directly or through other modules, at the top of a file or inside a function. The workflow passes
:func:`code_digest` of the step to its rule as a ``params`` entry, so Snakemake's ``params``
trigger reruns a job exactly when the content of a module it runs has changed. Content, not
paths or modification times: the digest is the same in a copy of the project at another path, in
a fresh clone (new mtimes) and under ``--directory`` (see docs/architecture.md, "What reruns").

The step script itself is not in the digest: Snakemake's ``code`` trigger already watches it.

>>> from pathlib import Path
>>> steps = Path(__file__).parent / "steps"
>>> "convergent.matching" in library_modules(steps / "match.py")
True
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path

PACKAGE = "convergent"
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the directory holding the package


def _module_path(module: str, root: Path) -> Path | None:
    """The source file of ``module`` (``convergent.x`` or ``convergent.x.y``) under ``root``."""
    parts = module.split(".")
    file = root.joinpath(*parts).with_suffix(".py")
    if file.is_file():
        return file
    package = root.joinpath(*parts, "__init__.py")
    return package if package.is_file() else None


def _direct_imports(path: Path, root: Path) -> frozenset[str]:
    """``convergent`` modules that the file at ``path`` imports anywhere in its body."""
    return frozenset(name for name in _imported_names(path.read_text(), str(path))
                     if _module_path(name, root) is not None)


@functools.cache  # keyed by content: an edited file is parsed again
def _imported_names(source: str, filename: str) -> frozenset[str]:
    found = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from convergent import subspace` imports a module; `from convergent.x import f`, x
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            raise ValueError(f"{filename}: relative imports are not followed; import convergent.* by name")
        else:
            continue
        found.update(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))
    return frozenset(found)


def _parents(module: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first."""
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def library_modules(script: str | os.PathLike, root: str | os.PathLike = SOURCE_ROOT) -> list[str]:
    """Every ``convergent`` module ``script`` imports, transitively, sorted by name (packages'
    ``__init__`` included, as Python runs them)."""
    root = Path(root).resolve()
    seen: set[str] = set()
    todo = list(_direct_imports(Path(script).resolve(), root))
    while todo:
        module = todo.pop()
        for name in [*_parents(module), module]:
            if name not in seen:
                seen.add(name)
                todo.extend(_direct_imports(_module_path(name, root), root))
    return sorted(seen)


def code_digest(script: str | os.PathLike, root: str | os.PathLike = SOURCE_ROOT) -> dict[str, str]:
    """``{module: SHA-256 of its source (16 hex digits)}`` for :func:`library_modules` of ``script``.

    A mapping rather than one hash, so that Snakemake's "params have changed" reason shows which
    module changed.
    """
    root = Path(root).resolve()
    return {name: hashlib.sha256(_module_path(name, root).read_bytes()).hexdigest()[:16]
            for name in library_modules(script, root)}

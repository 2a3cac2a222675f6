"""Writing a step's output files: each appears whole or not at all.

A job killed mid-write (SIGKILL, out of memory, a node lost) must never leave a file that a later
run takes for finished. Every writer in the library therefore writes through :func:`atomic_output`:
the content goes to a temporary name in the same directory, and only a complete file is renamed
onto the final path (``os.replace`` is atomic within a file system).

It is also the one place where an output becomes final, so whatever should accompany every output
(a checksum record, say) belongs in :func:`atomic_output` after the rename, and every writer gets it.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
>>> with atomic_output(path) as tmp:
...     _ = tmp.write_text("a,b\\n1,2\\n")
>>> path.read_text()
'a,b\\n1,2\\n'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends
    without an exception, removed otherwise.

    The temporary name is hidden and per process (``.NAME.tmpPID.EXT``) and keeps ``path``'s
    extension last, so writers that infer a format from it (matplotlib, ``numpy.savez``, pandas
    compression) write what ``path`` asks for. Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

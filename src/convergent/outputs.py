"""Writing a step's output files: each appears whole or not at all.

A job killed mid-write (SIGKILL, out of memory, a node lost) must never leave a file that a later
run takes for finished. Every writer in the library therefore writes through :func:`atomic_output`:
the content goes to a temporary name in the same directory, and only a complete file is renamed
onto the final path (``os.replace`` is atomic within a file system).

It is also the one place where an output becomes final, so it records each output's SHA-256 beside
it (``.NAME.sha256``, in ``sha256sum`` format: ``sha256sum -c .NAME.sha256`` verifies it by hand).
``convergent check`` compares them, so a file damaged after it was written (a disk, a copy, an
edit) is found before an analysis reads it.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
>>> with atomic_output(path) as tmp:
...     _ = tmp.write_text("a,b\\n1,2\\n")
>>> path.read_text()
'a,b\\n1,2\\n'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
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
        digest = file_digest(tmp)
        os.replace(tmp, path)
        record = checksum_path(path)
        # a record that a kill leaves stale says "mismatch": Snakemake redoes that job anyway
        record_tmp = record.with_name(f"{record.name}.tmp{os.getpid()}")
        record_tmp.write_text(f"{digest}  {path.name}\n")
        os.replace(record_tmp, record)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that killed writers of ``path`` left beside it (``.NAME.tmpPID.EXT``
    and ``.NAME.sha256.tmpPID``); returns them.

    Only for a job about to write ``path`` itself: Snakemake gives one output to one running job
    at a time, so no temporary of ``path`` can belong to a writer still alive. Without this, every
    SIGKILL would leave a file for ``convergent check`` to report after the rerun had made the output.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = (out.parent / ".t.csv.tmp77.csv").write_text("a,b\\n1,")
    >>> [p.name for p in remove_stale_temporaries(out)]
    ['.t.csv.tmp77.csv']
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    mine = re.compile(rf"^\.{re.escape(path.name)}\.tmp\d+{re.escape(path.suffix)}$"
                      rf"|^\.{re.escape(path.name)}\.sha256\.tmp\d+$")
    stale = [p for p in path.parent.iterdir() if mine.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def checksum_path(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_output` records ``path``'s SHA-256: ``.NAME.sha256`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.sha256")


def file_digest(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """The SHA-256 of a file, read in blocks (activation files can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_checksum(path: str | os.PathLike) -> str | None:
    """The SHA-256 recorded when ``path`` was written, or None where none was."""
    record = checksum_path(path)
    if not record.is_file():
        return None
    text = record.read_text().split()
    return text[0] if text else ""

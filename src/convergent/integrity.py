"""Faults in data: non-finite values and damaged files, reported where they arise with what to do.

A diverged training run, a network that overflows, a file cut short by a full disk or a copy that
stopped half-way: each must stop the job that meets it with the file, the layer and the command
that remakes it, instead of a number that is silently wrong or a traceback from inside h5py.
Torch-free (analysis jobs import it).

>>> import numpy as np
>>> try:
...     check_finite(np.array([[1.0, np.nan], [2.0, 3.0]]), "seed0.h5", "conv1")
... except NonFiniteError as error:
...     print(str(error).split(";")[0])
seed0.h5, layer 'conv1': 1 non-finite value (NaN 1, inf 0) in 1 of 2 units, first in row 0
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class NonFiniteError(ValueError):
    """NaN or infinite values where only finite ones make sense; the message says where and why."""


class DamagedFileError(RuntimeError):
    """A file that exists but cannot be read whole (truncated, corrupt, not of its format)."""


def remake_hint(path: str | os.PathLike) -> str:
    """What to do about a damaged pipeline file: Snakemake remakes a file it is told to force."""
    path = Path(path)
    if "results" in path.parts:
        return f"remake it: snakemake --forcerun {path} (or delete it and rerun snakemake)"
    return "replace it with an intact copy from where it was made"


def check_finite(values: np.ndarray, path: str | os.PathLike, layer: str, what: str = "",
                 row_offset: int = 0) -> np.ndarray:
    """``values`` (rows x units) unchanged, or :class:`NonFiniteError` naming the file, the layer,
    how many values and units are affected and the first bad row.

    Every analysis assumes finite activations; a NaN that got in silently turns correlations,
    matchings and moments into NaN far from its cause (a diverged network, a float16 overflow).
    """
    finite = np.isfinite(values)
    if finite.all():
        return values
    bad = ~finite
    units = bad.reshape(len(values), -1).any(axis=0) if values.ndim > 1 else bad
    first_row = int(np.argmax(bad.reshape(len(values), -1).any(axis=1))) + row_offset
    nan = int(np.isnan(values).sum())
    count = int(bad.sum())
    raise NonFiniteError(
        f"{path}, layer {layer!r}: {count} non-finite value{'s' if count != 1 else ''} (NaN {nan}, inf {count - nan}) "
        f"in {int(units.sum())} of {units.size} units, first in row {first_row}{what}; the network that made the file "
        f"diverged or overflowed. Check its training log (loss, accuracy), then {remake_hint(path)}")


def _damage(path: Path, error: BaseException) -> str:
    """The kind of damage, from the file's first bytes and h5py's message."""
    size = path.stat().st_size
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if size == 0:
        return "empty (0 bytes)"
    with open(path, "rb") as handle:
        head = handle.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        return f"not an HDF5 file (it starts with {head!r})"
    truncated = re.search(r"eof = (\d+).*stored_eof = (\d+)", message)
    if truncated:
        return f"truncated: {truncated.group(1)} of its {truncated.group(2)} bytes"
    if "truncated" in message:
        return f"truncated ({size} bytes)"
    return f"corrupt ({message})"


@contextlib.contextmanager
def open_hdf5(path: str | os.PathLike, what: str = "HDF5 file") -> Iterator:
    """``h5py.File(path, "r")`` whose failures to open or read name the file, the damage and the
    command that remakes it (:class:`DamagedFileError`), instead of h5py's internals.

    ``what`` says what the file is ("activation file", "statistics file") in the message.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise DamagedFileError(f"{what} {path} is damaged: {_damage(path, error)}; {remake_hint(path)}") from None
    try:
        with h5:
            yield h5
    except OSError as error:  # a read inside: a corrupt chunk, a truncated dataset
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DamagedFileError(f"{what} {path} is damaged: cannot read its data ({message}); "
                               f"{remake_hint(path)}") from None

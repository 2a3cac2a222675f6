"""Seeded draws of rows and positions, the same for every network.

Comparing two networks needs *paired* rows: both see the same probe inputs at the same positions.
Every random draw in the pipeline (the positions an extractor keeps, the rows an analysis
subsamples) therefore comes from :func:`seeded_rng`, a generator that is a function of the
config's seed and of names (the layer, what the draw is for) and never of the network.

>>> sample_rows(10, 3, seeded_rng(0, "conv1"))
array([2, 5, 8])
>>> sample_rows(10, 20, seeded_rng(0, "conv1")) is None    # asks for every row
True
"""

from __future__ import annotations

import zlib

import numpy as np


def seeded_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator determined by ``seed`` and ``names`` only (names hashed with CRC-32, which is
    stable across processes and Python versions, unlike ``hash``)."""
    return np.random.default_rng([int(seed), *(zlib.crc32(name.encode()) for name in names)])


def sample_rows(n_rows: int, size: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted indices of ``size`` of ``n_rows`` rows, drawn without replacement from ``rng``;
    ``None`` (every row, in order) when ``size`` is None or not below ``n_rows``.

    Sorted, so files are read front to back (see :func:`convergent.activations.read_samples`).
    """
    if size is None or size >= n_rows:
        return None
    return np.sort(rng.choice(n_rows, size=size, replace=False))

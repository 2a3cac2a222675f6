"""The activation HDF5 contract, and reading it back (no torch needed: analysis steps stay light).

Written by :mod:`convergent.extraction`.

File layout (one file per network, self-describing; docs/architecture.md, "File contracts"):

* ``/probe/image_index`` (int): dataset indices (into the held-out split) of the probe inputs;
  for probe text the passages' indices in the text file, with ``/probe/token_ids``,
  ``attention_mask``, ``valid`` (sampleable positions), ``tokens`` and ``passages`` beside it
  (:mod:`convergent.text_extraction`).
* ``/layers/{layer}/samples`` (float, ``[n_samples, n_units]``): the layer's activations, paired
  rows across networks. Each layer has a **kind** (attr ``kind``):

  - ``spatial`` (a map ``[C, H, W]``): ``positions_per_image`` positions per probe input, drawn
    from an RNG seeded by the config and the layer name only, so every network gets the same
    positions and rows are paired;
  - ``tokens`` (a sequence ``[T, C]``): positions sampled over the tokens in the same way (the map
    is ``T`` rows by one column);
  - ``vector`` (``[C]``): one row per probe input.
* ``/layers/{layer}/positions`` (int ``[n_samples, 3]``: probe input, y, x; for tokens: input,
  token, 0), spatial and token layers only.
* ``/layers/{layer}/input_mean`` (float32 ``[n_inputs, n_units]``): spatial and token layers only,
  each probe input's activation averaged over the whole map / all tokens: one pooled row per
  input, for the measures that need one (cross-layer maps, RSA).
* ``/layers/{layer}/input_first`` (float32 ``[n_inputs, n_units]``): token layers of probe text
  only, each passage's row at its first token (``/probe/first_token``: CLS for BERT, the first
  real token for causal LMs), the other pooling (:func:`read_input_rows`).
* ``/layers/{layer}/top_activations`` (compound ``[n_units, k]`` of ``image, y, x, value``): each
  unit's k largest activations over every probe input and every position; ``image`` is the row
  in the probe set (index ``/probe/image_index`` with it for the dataset index).
* ``/layers/{layer}`` attrs: ``kind``; ``signed`` (True when any value on the probe set is
  negative: no ReLU zero floor, so nothing downstream may assume one); ``shape`` (C, H, W; tokens
  C, T, 1; vectors C, 1, 1); ``layout`` (the tensor's layout in the network: NCHW, NHWC, NTC, NCT,
  NC); ``receptive_field`` (size, stride, offset: position (y, x) sees input rows
  ``y*stride+offset`` .. ``+size-1``; stride 0: the whole input); ``token_grid`` (tokens laid on
  an image grid: leading non-grid tokens, grid rows, grid columns), where one was found.
* root attrs: ``architecture``, ``seed``, ``trained``, ``dataset``, ``accuracy``, ``layers``,
  ``convergent_version``, ``config_hash``.

Files written before kinds existed stay readable: their ``conv``/``fc`` kinds read as
``spatial``/``vector``, their ``image_mean`` as ``input_mean``, a missing ``signed`` as False
(they held post-ReLU activations only).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import h5py
import numpy as np

from convergent.integrity import check_finite, open_hdf5
from convergent.sampling import seeded_rng

TOP_DTYPE = np.dtype([("image", "<i8"), ("y", "<i4"), ("x", "<i4"), ("value", "<f8")])


def sample_positions(layer: str, n_images: int, height: int, width: int, per_image: int,
                     seed: int) -> np.ndarray:
    """The (input, y, x) rows sampled for a map (tokens: ``width`` 1, y the token): a function of
    the layer's name, shape and the config seed only, never of the network, which is what pairs
    rows across networks."""
    rng = seeded_rng(seed, layer)
    per_image = min(per_image, height * width)
    flat = np.stack([rng.choice(height * width, size=per_image, replace=False) for _ in range(n_images)])
    flat.sort(axis=1)
    image = np.repeat(np.arange(n_images), per_image)
    return np.stack([image, flat.ravel() // width, flat.ravel() % width], axis=1).astype(np.int64)


def layer_names(path: str | os.PathLike) -> list[str]:
    """Probed layers of an activation file, input to output."""
    with open_hdf5(path, "activation file") as h5:
        return [str(name) for name in h5.attrs["layers"]]


def root_attrs(path: str | os.PathLike) -> dict:
    with open_hdf5(path, "activation file") as h5:
        return dict(h5.attrs)


# Kinds of files written before token layers existed.
LEGACY_KINDS = {"conv": "spatial", "fc": "vector"}
INPUT_MEAN = "input_mean"
INPUT_FIRST = "input_first"
#: how a per-input row is made from a layer's positions (config key 'similarity.pooling')
POOLINGS = ("mean", "first")
_LEGACY_INPUT_MEAN = "image_mean"


def layer_attrs(path: str | os.PathLike, layer: str) -> dict:
    """``kind`` (spatial/tokens/vector), ``signed``, ``shape`` (C, H, W), ``receptive_field``
    (size, stride, offset), ``n_samples``, and ``layout``/``token_grid`` where recorded."""
    with open_hdf5(path, "activation file") as h5:
        group = _layer_group(h5, path, layer)
        attrs = dict(group.attrs)
        attrs["n_samples"] = group["samples"].shape[0]
    attrs["kind"] = LEGACY_KINDS.get(str(attrs.get("kind")), str(attrs.get("kind")))
    attrs["signed"] = bool(attrs.get("signed", False))
    return attrs


def is_signed(path: str | os.PathLike, layer: str) -> bool:
    """Whether the layer has negative values (then no ReLU zero bin, no zero floor)."""
    return layer_attrs(path, layer)["signed"]


def _layer_group(h5: h5py.File, path, layer: str) -> h5py.Group:
    if f"layers/{layer}" not in h5:
        raise KeyError(f"{path}: no layer {layer!r}; it has {list(h5['layers'])}")
    return h5[f"layers/{layer}"]


def read_samples(path: str | os.PathLike, layer: str, rows: np.ndarray | slice | None = None,
                 dtype=np.float64, chunk_rows: int = 65536) -> np.ndarray:
    """A layer's activations ``[n_samples, n_units]``: every row, a slice, or the rows at the
    sorted, distinct indices ``rows`` (e.g. :func:`convergent.sampling.sample_rows`).

    Indexed rows are read in consecutive blocks of ``chunk_rows`` and picked in memory: h5py's
    point selection of scattered rows is far slower, and a block at a time bounds the memory.
    """
    with open_hdf5(path, "activation file") as h5:
        data = _layer_group(h5, path, layer)["samples"]
        if rows is None or isinstance(rows, slice):
            return check_finite(np.asarray(data[() if rows is None else rows], dtype=dtype), path, layer)
        rows = np.asarray(rows, dtype=np.int64)
        if np.any(np.diff(rows) <= 0) or (rows.size and not 0 <= rows[0] <= rows[-1] < data.shape[0]):
            raise ValueError(f"{path}: rows of {layer!r} must be sorted, distinct and below {data.shape[0]}")
        out = np.empty((len(rows), data.shape[1]), dtype=dtype)
        for start in range(0, data.shape[0], chunk_rows):
            lo, hi = np.searchsorted(rows, [start, start + chunk_rows])
            if lo < hi:
                out[lo:hi] = data[start:start + chunk_rows][rows[lo:hi] - start]
        return check_finite(out, path, layer)


def iter_sample_chunks(path: str | os.PathLike, layer: str, chunk_rows: int) -> Iterator[np.ndarray]:
    """A layer's activations in consecutive row blocks, so no step needs the whole layer in memory."""
    with open_hdf5(path, "activation file") as h5:
        data = _layer_group(h5, path, layer)["samples"]
        for start in range(0, data.shape[0], chunk_rows):
            yield check_finite(data[start:start + chunk_rows], path, layer, row_offset=start)


def read_positions(path: str | os.PathLike, layer: str) -> np.ndarray | None:
    with open_hdf5(path, "activation file") as h5:
        group = _layer_group(h5, path, layer)
        return group["positions"][()] if "positions" in group else None


def read_input_means(path: str | os.PathLike, layer: str) -> np.ndarray:
    """One row per probe input: a map's mean over all positions (a sequence's over all tokens),
    or a vector layer's rows."""
    with open_hdf5(path, "activation file") as h5:
        group = _layer_group(h5, path, layer)
        for name in (INPUT_MEAN, _LEGACY_INPUT_MEAN):
            if name in group:
                return check_finite(np.asarray(group[name][()], dtype=np.float64), path, layer, f" of {name}")
        if "positions" in group:  # rows are (input, position) samples, not inputs
            raise ValueError(f"{path}: layer {layer!r} has no {INPUT_MEAN} (written by an older "
                             "extractor); re-extract it (snakemake --forcerun extract)")
        return check_finite(np.asarray(group["samples"][()], dtype=np.float64), path, layer)


def read_input_rows(path: str | os.PathLike, layer: str, pooling: str = "mean") -> np.ndarray:
    """One row per probe input, pooled as asked: ``mean`` (:func:`read_input_means`) or ``first``
    (a token sequence's first-token row, ``input_first``; a vector layer's rows either way)."""
    if pooling == "mean":
        return read_input_means(path, layer)
    if pooling != "first":
        raise ValueError(f"pooling {pooling!r}: expected one of {POOLINGS}")
    with open_hdf5(path, "activation file") as h5:
        group = _layer_group(h5, path, layer)
        if INPUT_FIRST in group:
            return check_finite(np.asarray(group[INPUT_FIRST][()], dtype=np.float64), path, layer, f" of {INPUT_FIRST}")
        if "positions" not in group:
            return check_finite(np.asarray(group["samples"][()], dtype=np.float64), path, layer)
        kind = group.attrs.get("kind", "")
    why = ("a map of image positions has no first token; first-token pooling is for probe text"
           if kind != "tokens" else "written by an older extractor; re-extract it (snakemake --forcerun extract)")
    raise ValueError(f"{path}: layer {layer!r} has no first-token rows ({INPUT_FIRST}): {why}; "
                     "or set config key 'similarity.pooling: mean'")


def read_top_activations(path: str | os.PathLike, layer: str) -> np.ndarray:
    """Structured array ``[n_units, k]`` with fields image (probe row), y, x, value."""
    with open_hdf5(path, "activation file") as h5:
        return _layer_group(h5, path, layer)["top_activations"][()]


def read_image_index(path: str | os.PathLike) -> np.ndarray:
    with open_hdf5(path, "activation file") as h5:
        return h5["probe/image_index"][()]


def read_token_ids(path: str | os.PathLike) -> np.ndarray | None:
    """The probe passages' token ids ``[n, T]`` (probe text only; None for images)."""
    with h5py.File(path, "r") as h5:
        return h5["probe/token_ids"][()] if "probe/token_ids" in h5 else None


def check_paired(paths: list[str | os.PathLike], layer: str) -> None:
    """Raise unless every file has the same probe images and sample positions for ``layer``:
    statistics across networks are only meaningful on paired rows."""
    reference = None
    for path in paths:
        key = (read_image_index(path), read_positions(path, layer), read_token_ids(path))
        if reference is None:
            reference, first = key, path
            continue
        same_images = np.array_equal(key[0], reference[0]) and (
            (key[2] is None and reference[2] is None)
            or (key[2] is not None and reference[2] is not None and np.array_equal(key[2], reference[2])))
        same_positions = (key[1] is None and reference[1] is None) or (
            key[1] is not None and reference[1] is not None and np.array_equal(key[1], reference[1]))
        if not (same_images and same_positions):
            raise ValueError(
                f"{path} and {first} are not paired for layer {layer!r}: they were extracted with "
                "different probe images, token ids or positions (dataset/extract settings, tokenizers); re-extract both"
            )

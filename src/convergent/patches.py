"""Max-activation image patches and filter images for unit figures (Li et al. 2016, Fig. 2, 4, 5).

A unit of a conv layer at spatial position ``(y, x)`` sees the input rows
``y * stride + offset ... y * stride + offset + size - 1`` (and the same for columns), where
``size``, ``stride`` and ``offset`` describe the layer's receptive field (the ``receptive_field``
attribute of the activations HDF5; ``offset`` is negative where the network pads its input).
Patches are cut from the probe images on that window; the part outside the image is filled.

A unit that sees the whole input (stride 0: attention layers, token sequences, vectors, maps
after global context) has no window to cut: :func:`unit_patches` then shows the whole image with
the unit's position marked by a red frame (a map position's share of the image, or the image patch
a token stands for when the tokens lie on a grid, the ``token_grid`` attribute); a class token or
a vector marks nothing. Patch figures call :func:`unit_patches` with the layer's attributes, so
they work for any layer of any network.

Everything here is a pure function on arrays, apart from :func:`draw_patch_grid`, which draws on
a matplotlib axis that the caller owns.

>>> import numpy as np
>>> images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
>>> cut_patch(images, 1, 0, 0, size=3, stride=1, offset=-1)[..., 0].tolist()
[[0, 0, 0], [0, 16, 17], [0, 20, 21]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["records_array", "cut_patch", "cut_patches", "position_box", "unit_patches", "tile", "filter_images",
           "draw_patch_grid"]

MARK = (255, 0, 0)

RECORD_FIELDS = ("image", "y", "x", "value")


def records_array(records) -> np.ndarray:
    """Records as float64 ``[..., 4]`` (image, y, x, value).

    Accepts a structured array with fields ``image, y, x, value`` (as stored in
    ``/layers/{layer}/top_activations``) or anything array-like whose last axis has those 4 columns.
    """
    arr = np.asarray(records)
    if arr.dtype.names:
        missing = [f for f in RECORD_FIELDS if f not in arr.dtype.names]
        if missing:
            raise ValueError(f"records lack fields {missing}")
        return np.stack([arr[f].astype(np.float64) for f in RECORD_FIELDS], axis=-1)
    arr = arr.astype(np.float64)
    if arr.shape[-1] != 4:
        raise ValueError(f"records must have 4 columns (image, y, x, value), got shape {arr.shape}")
    return arr


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        return images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C] or [N, H, W], got shape {images.shape}")
    return images


def cut_patch(
    images: np.ndarray,
    image: int,
    y: int,
    x: int,
    size: int,
    stride: int,
    offset: int,
    fill: int = 0,
) -> np.ndarray:
    """The ``size × size × C`` input window of layer position ``(y, x)`` in ``images[image]``.

    Rows/columns outside the image are set to ``fill``.
    """
    images = _as_nhwc(images)
    _, height, width, channels = images.shape
    top, left = int(y) * stride + offset, int(x) * stride + offset
    patch = np.full((size, size, channels), fill, dtype=images.dtype)
    r0, r1 = max(top, 0), min(top + size, height)
    c0, c1 = max(left, 0), min(left + size, width)
    if r0 < r1 and c0 < c1:
        patch[r0 - top : r1 - top, c0 - left : c1 - left] = images[int(image), r0:r1, c0:c1]
    return patch


def cut_patches(
    images: np.ndarray,
    records,
    size: int,
    stride: int,
    offset: int,
    fill: int = 0,
) -> np.ndarray:
    """Patches for every record: records ``[..., 4]`` → ``[..., size, size, C]``.

    Typically ``records`` is ``[units, k, 4]`` (the k strongest activations of each unit) and the
    result feeds :func:`tile`. Record rows with a negative image index (padding for units with
    fewer than k records) give all-``fill`` patches. For FC layers pass the whole image as the
    receptive field (``size`` = image side, ``stride`` = 1, ``offset`` = 0, y = x = 0).
    """
    images = _as_nhwc(images)
    recs = records_array(records)
    flat = recs.reshape(-1, 4)
    out = np.full((len(flat), size, size, images.shape[-1]), fill, dtype=images.dtype)
    for i, (image, y, x, _value) in enumerate(flat):
        if image >= 0:
            out[i] = cut_patch(images, int(image), int(y), int(x), size, stride, offset, fill)
    return out.reshape(*recs.shape[:-1], size, size, images.shape[-1])


def position_box(y: int, x: int, attrs: dict, height: int, width: int) -> tuple[int, int, int, int] | None:
    """``(top, left, bottom, right)`` (exclusive) of the image region a map position or token
    stands for, from the layer's attributes; None where it stands for no region (a class token,
    tokens off any grid, vectors)."""
    units, rows, cols = (int(v) for v in attrs.get("shape", (0, 1, 1)))
    kind = str(attrs.get("kind", "spatial"))
    if kind == "tokens":
        grid = attrs.get("token_grid")
        if grid is None or int(y) < int(grid[0]):
            return None
        prefix, rows, cols = (int(v) for v in grid)
        y, x = divmod(int(y) - prefix, cols)
    elif rows * cols <= 1:
        return None
    return (int(y) * height // rows, int(x) * width // cols, (int(y) + 1) * height // rows, (int(x) + 1) * width // cols)


def _mark(image: np.ndarray, box) -> np.ndarray:
    """``image`` as RGB with a 1-pixel frame around ``box``."""
    out = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image.copy()
    if box is not None:
        top, left, bottom, right = box
        colour = np.asarray(MARK, dtype=out.dtype)
        out[top, left:right] = out[bottom - 1, left:right] = colour
        out[top:bottom, left] = out[top:bottom, right - 1] = colour
    return out


def unit_patches(images: np.ndarray, records, attrs: dict, fill: int = 0) -> np.ndarray:
    """Patches of records ``[..., 4]`` for a layer with attributes ``attrs`` (``receptive_field``,
    ``shape``, ``kind``, ``token_grid``): its receptive-field windows where the field is local, else
    whole images (RGB) with each record's position framed (see the module docstring)."""
    size, stride, offset = (int(v) for v in attrs["receptive_field"])
    if stride > 0:
        return cut_patches(images, records, size, stride, offset, fill)
    images = _as_nhwc(images)
    recs = records_array(records)
    flat = recs.reshape(-1, 4)
    _, height, width, channels = images.shape
    # RGB whenever the layer has positions to mark, so all its units' patches share one format
    marked = str(attrs.get("kind")) == "tokens" and attrs.get("token_grid") is not None or (
        str(attrs.get("kind")) != "tokens" and np.prod([int(v) for v in attrs.get("shape", (0, 1, 1))][1:]) > 1)
    channels = 3 if marked else channels
    out = np.full((len(flat), height, width, channels), fill, dtype=images.dtype)
    for i, (image, y, x, _value) in enumerate(flat):
        if image >= 0:
            out[i] = _mark(images[int(image)], position_box(int(y), int(x), attrs, height, width)) if marked \
                else images[int(image)]
    return out.reshape(*recs.shape[:-1], height, width, channels)


def tile(patches: np.ndarray, gap: int = 1, fill: int = 255) -> np.ndarray:
    """Mosaic of a ``[rows, cols, h, w, C]`` patch array, separated by ``gap`` pixels of ``fill``.

    Returns ``[rows * (h + gap) - gap, cols * (w + gap) - gap, C]``, ready for ``imshow``.

    >>> tile(np.zeros((2, 3, 2, 2, 1), dtype=np.uint8), gap=1).shape
    (5, 8, 1)
    """
    patches = np.asarray(patches)
    if patches.ndim == 4:
        patches = patches[..., None]
    rows, cols, h, w, c = patches.shape
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, c), fill, dtype=patches.dtype)
    for r in range(rows):
        for q in range(cols):
            out[r * (h + gap) : r * (h + gap) + h, q * (w + gap) : q * (w + gap) + w] = patches[r, q]
    return out


def filter_images(weights: np.ndarray) -> np.ndarray:
    """First-layer filters ``[units, C_in, kh, kw]`` as uint8 images ``[units, kh, kw, C_in]``.

    Each filter is scaled on its own so that 0 maps to mid-gray and its largest absolute weight
    to black or white, the usual way of showing conv1 filters (Li Fig. 2, 12).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"expected [units, C_in, kh, kw], got shape {w.shape}")
    scale = np.abs(w).reshape(len(w), -1).max(axis=1)
    scale[scale == 0] = 1.0
    w = w / scale[:, None, None, None]
    return np.clip(np.rint(127.5 + 127.5 * w), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def draw_patch_grid(
    ax,
    patches: np.ndarray,
    row_labels=None,
    col_labels=None,
    gap: int = 1,
    title: str | None = None,
) -> np.ndarray:
    """Draw ``[rows, cols, h, w, C]`` patches (C = 1 or 3) as one grid image on ``ax``.

    ``row_labels`` name the rows (e.g. unit and correlation) on the left; ``col_labels`` the
    columns. Returns the mosaic array that was drawn.
    """
    patches = np.asarray(patches)
    if patches.ndim == 4:
        patches = patches[..., None]
    mosaic = tile(patches, gap=gap, fill=255 if patches.dtype == np.uint8 else 1)
    rows, cols, h, w, c = patches.shape
    if c == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([q * (w + gap) + (w - 1) / 2 for q in range(cols)] if col_labels is not None else [])
    if col_labels is not None:
        ax.set_xticklabels(col_labels, fontsize=6)
    ax.set_yticks([r * (h + gap) + (h - 1) / 2 for r in range(rows)] if row_labels is not None else [])
    if row_labels is not None:
        ax.set_yticklabels(row_labels, fontsize=6)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)
    return mosaic

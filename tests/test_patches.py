"""convergent.patches: receptive-field windows against a padded-image reference, grids, filters."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from convergent.patches import cut_patch, cut_patches, draw_patch_grid, filter_images, records_array, tile  # noqa: E402


def reference_patch(images, image, y, x, size, stride, offset, fill):
    """Pad the image by ``size`` on every side, then slice: no clipping arithmetic to get wrong."""
    padded = np.pad(images[image], ((size, size), (size, size), (0, 0)), constant_values=fill)
    top, left = y * stride + offset + size, x * stride + offset + size
    return padded[top : top + size, left : left + size]


@pytest.mark.parametrize("size,stride,offset", [(3, 1, -1), (5, 2, -2), (7, 4, 0), (4, 3, 1)])
def test_cut_patch_equals_padded_reference(size, stride, offset):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 12, 10, 3), dtype=np.uint8)
    out_h = (12 - size - 2 * offset) // stride + 1
    out_w = (10 - size - 2 * offset) // stride + 1
    for image in range(3):
        for y in range(-1, out_h + 1):  # also positions whose window leaves the image
            for x in range(-1, out_w + 1):
                got = cut_patch(images, image, y, x, size, stride, offset, fill=7)
                np.testing.assert_array_equal(got, reference_patch(images, image, y, x, size, stride, offset, 7))


def test_cut_patches_shapes_records_and_padding_rows():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 8, 8), dtype=np.uint8)  # gray images without channel axis
    records = np.array(
        [[[0, 1, 2, 5.0], [3, 0, 0, 4.0]], [[2, 3, 3, 9.0], [-1, 0, 0, np.nan]]]
    )  # [units=2, k=2, 4]; the last row pads a unit with only one record
    patches = cut_patches(images, records, size=3, stride=2, offset=-1, fill=0)
    assert patches.shape == (2, 2, 3, 3, 1)
    np.testing.assert_array_equal(patches[1, 0], reference_patch(images[..., None], 2, 3, 3, 3, 2, -1, 0))
    assert np.all(patches[1, 1] == 0)
    structured = np.zeros(2, dtype=[("image", "i4"), ("y", "i4"), ("x", "i4"), ("value", "f4")])
    structured[0] = (0, 1, 2, 5.0)
    structured[1] = (3, 0, 0, 4.0)
    np.testing.assert_array_equal(records_array(structured), records[0])
    np.testing.assert_array_equal(cut_patches(images, structured, 3, 2, -1), patches[0])
    with pytest.raises(ValueError):
        records_array(np.zeros((2, 3)))


def test_tile_places_patches_in_row_major_grid():
    patches = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1, 1, 1) * np.ones((1, 1, 2, 2, 1), np.uint8)
    mosaic = tile(patches, gap=1, fill=255)
    assert mosaic.shape == (5, 8, 1)
    for r in range(2):
        for q in range(3):
            assert np.all(mosaic[r * 3 : r * 3 + 2, q * 3 : q * 3 + 2] == r * 3 + q)
    assert np.all(mosaic[2, :] == 255) and np.all(mosaic[:, 2] == 255)


def test_filter_images_map_zero_to_gray_and_extremes_to_black_white():
    w = np.zeros((2, 3, 2, 2))
    w[0, 0, 0, 0], w[0, 1, 1, 1] = 2.0, -1.0
    img = filter_images(w)
    assert img.shape == (2, 2, 2, 3) and img.dtype == np.uint8
    assert img[0, 0, 0, 0] == 255 and img[0, 1, 1, 1] == 64 and img[0, 1, 0, 2] == 128
    assert np.all(img[1] == 128)  # an all-zero filter stays gray instead of dividing by zero


def test_draw_patch_grid_draws_the_mosaic():
    rng = np.random.default_rng(2)
    patches = rng.integers(0, 256, size=(3, 4, 5, 5, 3), dtype=np.uint8)
    fig, ax = plt.subplots()
    mosaic = draw_patch_grid(ax, patches, row_labels=["a", "b", "c"], title="t")
    np.testing.assert_array_equal(ax.images[0].get_array(), mosaic)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert mosaic.std() > 0
    plt.close(fig)

"""convergent.sampling: the one seeded sampler behind every paired draw of rows and positions."""

import zlib

import numpy as np

from convergent.sampling import sample_rows, seeded_rng


def test_seeded_rng_is_a_function_of_seed_and_names_only():
    draw = seeded_rng(3, "conv2", "native").integers(0, 2**62, size=4)
    # the generator the pipeline has always used: numpy's, seeded by [seed, crc32(name), ...]
    expected = np.random.default_rng([3, zlib.crc32(b"conv2"), zlib.crc32(b"native")]).integers(0, 2**62, size=4)
    np.testing.assert_array_equal(draw, expected)
    np.testing.assert_array_equal(seeded_rng(3).integers(0, 2**62, size=4),
                                  np.random.default_rng(3).integers(0, 2**62, size=4))
    assert not np.array_equal(seeded_rng(3, "conv2").integers(0, 2**62, size=4),
                              seeded_rng(3, "conv3").integers(0, 2**62, size=4))


def test_sample_rows_draws_sorted_distinct_rows_or_none_for_all():
    rows = sample_rows(1000, 100, seeded_rng(0, "fc1"))
    assert len(rows) == 100 and len(np.unique(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert rows.min() >= 0 and rows.max() < 1000
    np.testing.assert_array_equal(rows, np.sort(np.random.default_rng([0, zlib.crc32(b"fc1")]).choice(
        1000, size=100, replace=False)))
    for size in (None, 1000, 5000):
        assert sample_rows(1000, size, seeded_rng(0)) is None


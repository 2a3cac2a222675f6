"""Progress callbacks of the analysis functions: called with non-decreasing counts up to the total,
and the log lines a step writes from them."""

import re
import time

import numpy as np

from convergent.clustering import cluster_pair
from convergent.correlation import correlation
from convergent.mutual_information import mutual_information
from convergent.progress import RateLog
from convergent.sparse_mapping import Moments, sparse_mapping
from support.progress import Recorder


def test_mutual_information_counts_blocks_of_binning_then_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 10)), rng.normal(size=(300, 7))
    seen = Recorder()
    with_progress = mutual_information(x, y, n_samples=None, block_units=4, device="cpu", progress=seen)
    seen.check(3 + 2 + 3 * 2)  # ceil(10/4) + ceil(7/4) binning blocks, then 3 x 2 block pairs
    np.testing.assert_array_equal(with_progress, mutual_information(x, y, n_samples=None, block_units=4,
                                                                     device="cpu"))


def test_sparse_mapping_counts_decay_unit_fits():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6))
    y = x[:, :3] @ rng.normal(size=(3, 5)) + 0.3 * rng.normal(size=(400, 5))
    shift_x, shift_y = x.mean(0), y.mean(0)
    train = Moments.of(x[:300], y[:300], shift_x, shift_y)
    val = Moments.of(x[300:], y[300:], shift_x, shift_y)
    decays = [0.0, 1e-3, 1e-2, 1e-1]
    seen = Recorder()
    table = sparse_mapping(train, val, decays=decays, progress=seen)
    seen.check(len(decays) * 5)
    assert table.equals(sparse_mapping(train, val, decays=decays))


def test_cluster_pair_counts_units_settled_in_leaves():
    rng = np.random.default_rng(2)
    factors = rng.normal(size=(500, 4))
    a = np.repeat(factors, 5, axis=1) + 0.5 * rng.normal(size=(500, 20))
    b = np.repeat(factors, 4, axis=1) + 0.5 * rng.normal(size=(500, 16))
    c = correlation(np.hstack([a, b]))
    seen = Recorder()
    res = cluster_pair(c[:20, :20], c[20:, 20:], c[:20, 20:], k=4, alpha=0.1, progress=seen)
    seen.check(36)
    plain = cluster_pair(c[:20, :20], c[20:, 20:], c[:20, 20:], k=4, alpha=0.1)
    np.testing.assert_array_equal(res.leaf_labels, plain.leaf_labels)


def test_rate_log_counts_the_rate_from_where_a_resumed_job_starts(capsys):
    log = RateLog("train seed 0, batches over all epochs", every=0.0)
    log(50, 100)  # resumed half-way: the clock starts, nothing to say yet
    time.sleep(0.05)
    log(60, 100)
    log(100, 100)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train seed 0, batches over all epochs: 60/100, ")
    rate = float(re.search(r"60/100, ([0-9.e+]+)/s, ", lines[0]).group(1))
    assert 0 < rate < 10 / 0.05 * 1.01  # 10 batches in >= 0.05 s, not 60
    assert lines[1].endswith("done")

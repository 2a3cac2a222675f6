"""convergent.matching against brute force, and the properties Li et al. §3.1 rely on."""

import itertools

import numpy as np
import pandas as pd
import pytest

from convergent.matching import (
    Match,
    bipartite_matching,
    extremes,
    frame_matches,
    match_frame,
    overlap_ratio,
    partner_agreement,
    read_match_csv,
    semi_matching,
    summarize_match,
    summarize_pairs,
    top_k_agreement,
    write_match_csv,
)


def brute_force_matching(sim):
    """Best total over every injective map of rows to columns (rows ≤ columns)."""
    n_a, n_b = sim.shape
    best, best_perm = -np.inf, None
    for perm in itertools.permutations(range(n_b), n_a):
        total = sim[np.arange(n_a), perm].sum()
        if total > best:
            best, best_perm = total, perm
    return best, np.array(best_perm)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (5, 5), (7, 7), (4, 6), (2, 7)])
@pytest.mark.parametrize("seed", range(3))
def test_bipartite_matching_equals_brute_force(shape, seed):
    sim = np.random.default_rng(seed).uniform(-1, 1, size=shape)
    best, _ = brute_force_matching(sim)
    m = bipartite_matching(sim)
    assert np.all(m.matched)
    assert len(set(m.partner.tolist())) == shape[0]  # one-to-one
    np.testing.assert_allclose(m.value, sim[np.arange(shape[0]), m.partner])
    np.testing.assert_allclose(m.value.sum(), best, rtol=0, atol=1e-12)


def test_bipartite_matching_more_rows_than_columns_leaves_surplus_unmatched():
    sim = np.random.default_rng(1).uniform(size=(6, 4))
    m = bipartite_matching(sim)
    assert m.matched.sum() == 4
    assert np.isnan(m.value[~m.matched]).all()
    best, _ = brute_force_matching(sim.T)  # same optimum from the other side
    np.testing.assert_allclose(np.nansum(m.value), best, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_semi_matching_equals_row_loop(seed):
    sim = np.random.default_rng(seed).uniform(-1, 1, size=(7, 5))
    m = semi_matching(sim)
    for i, row in enumerate(sim):
        j = max(range(len(row)), key=lambda k: row[k])
        assert m.partner[i] == j and m.value[i] == row[j]


@pytest.mark.parametrize("seed", range(5))
def test_semi_matching_sum_at_least_matching_sum(seed):
    # Li footnote 5: the row-wise greedy choice can only do better than the constrained one.
    sim = np.random.default_rng(seed).uniform(-1, 1, size=(7, 7))
    assert semi_matching(sim).value.sum() >= bipartite_matching(sim).value.sum() - 1e-12


def test_dead_units_are_listed_not_matched():
    rng = np.random.default_rng(3)
    sim = rng.uniform(size=(6, 6))
    sim[2, :] = np.nan  # dead unit of A
    sim[:, 4] = np.nan  # dead unit of B
    for m in (semi_matching(sim), bipartite_matching(sim)):
        assert m.partner[2] == -1 and np.isnan(m.value[2])
        assert 4 not in m.partner
    live_rows, live_cols = [0, 1, 3, 4, 5], [0, 1, 2, 3, 5]
    best, perm = brute_force_matching(sim[np.ix_(live_rows, live_cols)])
    m = bipartite_matching(sim)
    np.testing.assert_allclose(np.nansum(m.value), best, atol=1e-12)
    assert m.partner[live_rows].tolist() == np.array(live_cols)[perm].tolist()


def test_match_frame_dead_flags_override_similarity():
    sim = np.random.default_rng(4).uniform(size=(5, 5))
    frame = match_frame(sim, dead_a=np.array([0, 1, 0, 0, 0], bool), dead_b=np.array([0, 0, 0, 1, 0], bool))
    assert list(frame.columns) == [
        "unit", "dead_a", "dead_b", "semi_partner", "semi_value", "match_partner", "match_value", "coincide"
    ]
    assert frame["dead_a"].tolist() == [False, True, False, False, False]
    assert frame["dead_b"].tolist() == [False, False, False, True, False]
    assert frame.loc[1, "semi_partner"] == -1 and frame.loc[1, "match_partner"] == -1
    assert 3 not in frame["semi_partner"].tolist() and 3 not in frame["match_partner"].tolist()


def test_identical_nets_give_identity_matching_and_full_overlap():
    rng = np.random.default_rng(5)
    x = np.maximum(rng.normal(size=(500, 12)), 0)
    n = x.shape[1]
    corr = np.corrcoef(x, x, rowvar=False)[:n, n:]
    np.testing.assert_allclose(np.diag(corr), 1.0)
    frame = match_frame(corr)
    assert frame["semi_partner"].tolist() == list(range(n))
    assert frame["match_partner"].tolist() == list(range(n))
    summary = summarize_match(frame)
    assert summary["overlap"] == 1.0
    np.testing.assert_allclose([summary["semi"], summary["matching"]], 1.0)


def test_overlap_ratio_counts_coinciding_partners():
    semi = Match(np.array([0, 0, 2, -1]), np.array([0.9, 0.8, 0.5, np.nan]))
    match = Match(np.array([0, 1, 2, -1]), np.array([0.9, 0.1, 0.5, np.nan]))
    assert overlap_ratio(semi, match) == pytest.approx(2 / 3)
    assert np.isnan(overlap_ratio(Match(np.array([-1]), np.array([np.nan])), match))


def test_summarize_pairs_first_pair_and_spread():
    rng = np.random.default_rng(6)
    frames = {pair: match_frame(rng.uniform(size=(6, 6))) for pair in [(1, 2), (0, 2), (0, 1)]}
    row = summarize_pairs(frames)
    assert row["pair"] == "0-1" and row["n_pairs"] == 3
    first = summarize_match(frames[(0, 1)])
    each = pd.DataFrame([summarize_match(f) for f in frames.values()])
    for key in ("semi", "matching", "overlap"):
        assert row[key] == first[key]
        assert row[f"{key}_mean"] == pytest.approx(each[key].mean())
        assert row[f"{key}_std"] == pytest.approx(each[key].std(ddof=1))
    single = summarize_pairs({(0, 1): frames[(0, 1)]})
    assert np.isnan(single["semi_std"])


def test_extremes_order_and_dead_units():
    values = np.array([0.2, np.nan, 0.9, 0.5, 0.7, 0.1])
    partner = np.array([0, -1, 1, 2, 3, 4])
    best, worst = extremes(Match(partner, values), k=2)
    assert best.tolist() == [2, 4]
    assert worst.tolist() == [0, 5]


def test_top_k_agreement_and_partner_agreement():
    first = Match(np.array([0, 1, 2, 3]), np.array([0.9, 0.8, 0.7, 0.1]))
    second = Match(np.array([0, 3, 2, 1]), np.array([0.9, 0.8, 0.7, 0.1]))
    # Top-3 of both are units 0, 1, 2, but unit 1's partner differs.
    assert top_k_agreement(first, second, k=3) == 2
    assert partner_agreement(first, second) == 0.5
    assert top_k_agreement(first, first, k=4) == 4


def test_correlation_matches_numpy_corrcoef():
    correlation_module = pytest.importorskip("convergent.correlation")
    rng = np.random.default_rng(7)
    x = np.maximum(rng.normal(size=(300, 5)), 0)
    y = np.maximum(x @ rng.normal(size=(5, 4)) + rng.normal(size=(300, 4)), 0)
    got = np.asarray(correlation_module.correlation(x, y))
    np.testing.assert_allclose(got, np.corrcoef(x, y, rowvar=False)[:5, 5:], atol=1e-10)
    same = np.asarray(correlation_module.correlation(x, x))
    np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-12)
    assert overlap_ratio(semi_matching(same), bipartite_matching(same)) == 1.0


def test_match_csv_round_trip(tmp_path):
    sim = np.random.default_rng(8).uniform(size=(5, 4))
    sim[1] = np.nan
    frame = match_frame(sim)
    write_match_csv(frame, tmp_path / "m" / "0-1.csv")
    back = read_match_csv(tmp_path / "m" / "0-1.csv")
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    semi, match = frame_matches(back)
    assert semi.partner.tolist() == frame["semi_partner"].tolist()
    np.testing.assert_array_equal(match.value, frame["match_value"].to_numpy())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [".0-1.csv.sha256", "0-1.csv"]  # no temporary

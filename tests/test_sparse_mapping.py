"""Sparse one-to-many mapping (Li et al. §4, Table 2): the Gram-based Lasso against scikit-learn,
and recovery of planted sources."""

import numpy as np
import pytest
from sklearn.linear_model import Lasso, LinearRegression

from convergent.sparse_mapping import (
    Moments,
    decay_grid,
    lasso_gram,
    lasso_path_gram,
    sparse_mapping,
    split_validation,
)


def correlated_relu(rng, n, p):
    """ReLU activations of correlated units, like a real layer: dense Gram, zeros, skew."""
    mix = np.eye(p) + 0.4 * rng.standard_normal((p, p))
    return np.maximum(rng.standard_normal((n, p)) @ mix, 0)


def standardize(a):
    return (a - a.mean(0)) / a.std(0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = correlated_relu(rng, 1500, 20)
    y = np.maximum(x @ (0.3 * rng.standard_normal((20, 8))) + rng.standard_normal((1500, 8)), 0)
    return x, y


def gram(x, y):
    mo = Moments.of(x, y)
    sx, sy = mo.std()
    return mo.standardized(mo.mean_x, sx, mo.mean_y, sy)


@pytest.mark.parametrize("alpha", [1e-4, 3e-3, 0.03, 0.2])
def test_lasso_gram_equals_sklearn(data, alpha):
    x, y = data
    g = gram(x, y)
    ours = lasso_gram(g.xx, g.xy, alpha, yy=g.yy_diag, tol=1e-14, max_iter=100_000)
    xs, ys = standardize(x), standardize(y)
    ref = np.stack([Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100_000)
                    .fit(xs, ys[:, j]).coef_ for j in range(y.shape[1])], axis=1)
    assert ours.converged
    np.testing.assert_allclose(ours.coef, ref, atol=1e-6, rtol=0)
    # exact zeros where sklearn has them
    np.testing.assert_array_equal(ours.coef == 0, ref == 0)


def test_warm_started_path_equals_cold_solves(data):
    x, y = data
    g = gram(x, y)
    alphas = [0.0, 1e-3, 0.05, 0.01, 0.3]  # deliberately unsorted
    path = lasso_path_gram(g.xx, g.xy, alphas, yy=g.yy_diag, tol=1e-14, max_iter=100_000)
    for a, res in zip(alphas, path):
        cold = lasso_gram(g.xx, g.xy, a, yy=g.yy_diag, tol=1e-14, max_iter=100_000)
        np.testing.assert_allclose(res.coef, cold.coef, atol=1e-7)


def test_zero_decay_is_least_squares(data):
    x, y = data
    g = gram(x, y)
    ref = LinearRegression(fit_intercept=False).fit(standardize(x), standardize(y)).coef_.T
    np.testing.assert_allclose(lasso_gram(g.xx, g.xy, 0.0).coef, ref, atol=1e-9)


def test_moments_add_up_over_chunks_and_standardize_like_arrays(data):
    x, y = data
    whole = Moments.of(x, y)
    chunks = Moments.of(x[:700], y[:700]) + Moments.of(x[700:], y[700:])
    for f in ("xx", "xy", "yy", "sum_x", "sum_y"):
        np.testing.assert_allclose(getattr(chunks, f), getattr(whole, f), rtol=1e-12)
    # moments around a shift stay exact when the means dwarf the spread
    big_x, big_y = x + 1e6, y - 1e6
    shift_x, shift_y = big_x[:100].mean(0), big_y[:100].mean(0)
    shifted = Moments.of(big_x, big_y, shift_x, shift_y)
    g_big = shifted.standardized(shifted.mean_x, *shifted.std()[:1], shifted.mean_y, shifted.std()[1])
    g = whole.standardized(whole.mean_x, whole.std()[0], whole.mean_y, whole.std()[1])
    np.testing.assert_allclose(g_big.xy, g.xy, atol=1e-8)
    np.testing.assert_allclose(g_big.xx, g.xx, atol=1e-8)
    with pytest.raises(ValueError):
        _ = shifted + whole  # different shifts: the sums do not add
    # validation rows standardised with the *training* statistics
    tr, va = Moments.of(x[:1000], y[:1000]), Moments.of(x[1000:], y[1000:])
    sx, sy = tr.std()
    g = va.standardized(tr.mean_x, sx, tr.mean_y, sy)
    xv = (x[1000:] - x[:1000].mean(0)) / x[:1000].std(0)
    yv = (y[1000:] - y[:1000].mean(0)) / y[:1000].std(0)
    np.testing.assert_allclose(g.xx, xv.T @ xv / 500, atol=1e-10)
    np.testing.assert_allclose(g.xy, xv.T @ yv / 500, atol=1e-10)
    np.testing.assert_allclose(g.yy_diag, (yv**2).mean(0), atol=1e-10)
    w = np.random.default_rng(1).standard_normal((x.shape[1], y.shape[1]))
    np.testing.assert_allclose(g.half_mse(w), 0.5 * ((yv - xv @ w) ** 2).mean(0), atol=1e-9)


def test_validation_loss_matches_direct_prediction(data):
    x, y = data
    val = np.zeros(len(x), bool)
    val[::4] = True
    table, coefs = sparse_mapping(Moments.of(x[~val], y[~val]), Moments.of(x[val], y[val]),
                                  decays=[0.0, 1e-3, 1e-2], return_coef=True)
    mx, sx, my, sy = x[~val].mean(0), x[~val].std(0), y[~val].mean(0), y[~val].std(0)
    xv, yv = (x[val] - mx) / sx, (y[val] - my) / sy
    for row, w in zip(table.itertuples(), coefs):
        direct = 0.5 * ((yv - xv @ w) ** 2).mean()
        assert row.loss == pytest.approx(direct, rel=1e-9)
        assert row.mse == pytest.approx(2 * direct, rel=1e-9)
        assert row.nonzero == pytest.approx((w != 0).sum(0).mean())
        assert row.nonzero_001 == pytest.approx((np.abs(w) > 0.01).sum(0).mean())
        assert row.nonzero_001 <= row.nonzero
    # decay_scale "n_targets" multiplies the decay by the number of units of net B
    assert table.alpha.tolist() == pytest.approx([d * y.shape[1] for d in table.decay])


def test_planted_sources_are_the_non_zeros():
    """Each unit of B is a noisy mix of 1–3 planted units of A: its non-zeros are exactly those."""
    rng = np.random.default_rng(3)
    n, p, m = 4000, 30, 12
    x = correlated_relu(rng, n, p) + 0.0
    x = np.maximum(rng.standard_normal((n, p)), 0) + 0.3 * x  # mildly correlated sources
    sources = [np.sort(rng.choice(p, size=rng.integers(1, 4), replace=False)) for _ in range(m)]
    y = np.zeros((n, m))
    for j, s in enumerate(sources):
        y[:, j] = x[:, s] @ rng.uniform(0.6, 1.0, len(s)) + 0.2 * rng.standard_normal(n)
    groups = np.repeat(np.arange(n // 10), 10)  # 10 "positions" per image
    val = split_validation(groups, 0.25, seed=0)
    table, coefs = sparse_mapping(Moments.of(x[~val], y[~val]), Moments.of(x[val], y[val]),
                                  decays=[0.0, 0.05], decay_scale=1.0, return_coef=True)
    support = [np.flatnonzero(coefs[1][:, j]) for j in range(m)]
    for j in range(m):
        np.testing.assert_array_equal(support[j], sources[j])
    assert table.nonzero[0] == p  # no penalty: dense
    assert table.nonzero[1] == pytest.approx(np.mean([len(s) for s in sources]))


def test_table_is_monotone_along_the_decay_grid(data):
    x, y = data
    val = np.zeros(len(x), bool)
    val[1::5] = True
    table = sparse_mapping(Moments.of(x[~val], y[~val]), Moments.of(x[val], y[val]))
    assert table.decay.tolist() == decay_grid()
    assert table.converged.all()
    # the fit term of the Lasso path never decreases with the penalty
    assert np.all(np.diff(table.train_loss) >= -1e-9)
    assert table.nonzero.iloc[0] == x.shape[1] and table.nonzero.iloc[-1] < table.nonzero.iloc[0]
    assert table.nonzero.iloc[-1] == 0  # decay 0.1 × 8 units: alpha 0.8 beyond every correlation
    assert table.loss.iloc[-1] == pytest.approx(0.5, abs=0.05)  # predicting 0 scores ½


def test_dead_units_are_excluded_not_matched(data):
    x, y = data
    x, y = x.copy(), y.copy()
    x[:, 3] = 0.0  # dead source
    y[:, 5] = 1.7  # dead target (constant; its float std is round-off, not 0)
    val = np.zeros(len(x), bool)
    val[::3] = True
    table, coefs = sparse_mapping(Moments.of(x[~val], y[~val]), Moments.of(x[val], y[val]),
                                  decays=[0.0, 1e-3], return_coef=True)
    assert table.attrs["n_dead_targets"] == 1 and table.attrs["n_dead_sources"] == 1
    assert np.isfinite(table.loss).all()
    for w in coefs:
        assert np.all(w[3] == 0) and np.all(w[:, 5] == 0)
    assert table.nonzero[0] == x.shape[1] - 1


def test_split_keeps_images_whole():
    groups = np.repeat(np.arange(50), 7)
    val = split_validation(groups, 0.2, seed=1)
    assert len(np.unique(groups[val])) == 10
    assert not set(groups[val]) & set(groups[~val])
    np.testing.assert_array_equal(val, split_validation(groups, 0.2, seed=1))


def test_decay_grid():
    grid = decay_grid()
    assert grid[:3] == [0.0, 1e-5, 1e-4] and grid[-2:] == [1e-2, 1e-1]
    np.testing.assert_allclose(np.log10(grid[3:-2]), np.arange(-3.8, -2.19, 0.2))


def test_nearly_dead_source_does_not_wreck_the_score(data):
    """A unit that fires once, faintly, in training has a round-off-sized spread there; scaling
    its validation activations by 1/std would make the dense fit's loss explode."""
    x, y = data
    x = x.copy()
    val = np.zeros(len(x), bool)
    val[::4] = True
    x[:, 7] = 0.0
    x[np.flatnonzero(~val)[0], 7] = 1e-10  # one faint spike in training
    x[val, 7] = np.abs(np.random.default_rng(2).standard_normal(val.sum()))  # alive in validation
    table = sparse_mapping(Moments.of(x[~val], y[~val]), Moments.of(x[val], y[val]), decays=[0.0])
    assert table.attrs["n_dead_sources"] == 1
    assert table.loss[0] < 0.5

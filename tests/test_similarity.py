"""convergent.similarity against independent implementations written from the papers' formulas.

The references below work on the data matrices (n × n kernels, QR/SVD of the centered data,
scipy's Procrustes and Spearman), whereas the library works from covariance matrices, so an
agreement to 1e-6 checks the covariance rewriting as well as the formula.
"""

import itertools

import numpy as np
import pytest
from scipy import linalg, stats
from scipy.spatial.distance import pdist, squareform

from convergent import similarity as sim

TOL = 1e-6


def _pair(n=120, p=8, q=6, seed=0, noise=0.5):
    """Two related representations: Y is a noisy linear read-out of X's latent factors, ReLU'd."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 5))
    x = np.maximum(z @ rng.normal(size=(5, p)) + 0.3 * rng.normal(size=(n, p)), 0)
    y = np.maximum(z @ rng.normal(size=(5, q)) + noise * rng.normal(size=(n, q)), 0)
    return x, y


def _center(a):
    return a - a.mean(axis=0)


def _orthogonal(k, rng):
    q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    return q


# --------------------------------------------------------------------------- references


def ref_hsic_biased(k, l):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def ref_cka_kernel(k, l):
    return ref_hsic_biased(k, l) / np.sqrt(ref_hsic_biased(k, k) * ref_hsic_biased(l, l))


def ref_hsic_unbiased(k, l):
    # Song et al. 2012, "Feature selection via dependence maximization", eq. (5).
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def ref_rbf_kernel(x, frac):
    d2 = pdist(x, "sqeuclidean")
    sigma2 = frac**2 * np.median(d2)
    return squareform(np.exp(-d2 / (2 * sigma2)), checks=False) + np.eye(len(x))


def ref_cca(x, y):
    """Canonical correlations and orthonormal X-side canonical variates via QR of the data."""
    qx, _ = np.linalg.qr(_center(x))
    qy, _ = np.linalg.qr(_center(y))
    u, s, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return s, qx @ u


def ref_svcca(x, y, keep=0.99):
    def reduce(a):
        u, s, _ = np.linalg.svd(_center(a), full_matrices=False)
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.argmax(frac >= keep)) + 1
        return u[:, :k] * s[:k]
    return ref_cca(reduce(x), reduce(y))[0].mean()


def ref_pwcca(x, y):
    # Morcos et al. 2018 §3.1: alpha_i = sum_j |<h_i, x_j>| over X's (centered) neurons x_j.
    rho, h = ref_cca(x, y)
    alpha = np.abs(h.T @ _center(x)).sum(axis=1)
    return np.sum(alpha * rho) / alpha.sum()


def ref_procrustes(x, y):
    xs = _center(x) / np.linalg.norm(_center(x))
    ys = _center(y) / np.linalg.norm(_center(y))
    width = max(xs.shape[1], ys.shape[1])
    xs = np.pad(xs, ((0, 0), (0, width - xs.shape[1])))
    ys = np.pad(ys, ((0, 0), (0, width - ys.shape[1])))
    r, _ = linalg.orthogonal_procrustes(ys, xs)
    return np.linalg.norm(ys @ r - xs)


def ref_rsa(x, y):
    return stats.spearmanr(pdist(x, "correlation"), pdist(y, "correlation")).statistic


def ref_matching(x, y):
    """Brute force over every one-to-one assignment of the (few) units."""
    p = x.shape[1]
    corr = np.corrcoef(x.T, y.T)[:p, p:]
    best = max(itertools.permutations(range(corr.shape[1]), corr.shape[0]),
               key=lambda perm: corr[np.arange(corr.shape[0]), perm].sum())
    return corr[np.arange(corr.shape[0]), best].mean()


# --------------------------------------------------------------------------- cross-checks


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_cka_matches_kernel_form(seed):
    x, y = _pair(seed=seed)
    assert sim.linear_cka(x, y) == pytest.approx(ref_cka_kernel(x @ x.T, y @ y.T), abs=TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_debiased_cka_matches_song_unbiased_hsic(seed):
    x, y = _pair(n=60, seed=seed)
    k, l = _center(x) @ _center(x).T, _center(y) @ _center(y).T
    ref = ref_hsic_unbiased(k, l) / np.sqrt(ref_hsic_unbiased(k, k) * ref_hsic_unbiased(l, l))
    assert sim.linear_cka(x, y, debiased=True) == pytest.approx(ref, abs=TOL)


def test_debiased_cka_removes_small_sample_bias():
    # Independent representations with nearly as many units as samples: biased CKA is far from
    # 0 by construction of the estimator, the unbiased HSIC is centred on 0.
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 40)), rng.normal(size=(60, 40))
    assert sim.linear_cka(x, y) > 0.3
    assert abs(sim.linear_cka(x, y, debiased=True)) < 0.05


@pytest.mark.parametrize("frac", [0.4, 0.8])
def test_rbf_cka_matches_reference(frac):
    x, y = _pair(n=80)
    ref = ref_cka_kernel(ref_rbf_kernel(x, frac), ref_rbf_kernel(y, frac))
    assert sim.rbf_cka(x, y, sigma=frac) == pytest.approx(ref, abs=TOL)


@pytest.mark.parametrize("seed", [0, 1])
def test_cca_matches_qr_reference(seed):
    x, y = _pair(seed=seed)
    rho_ref, _ = ref_cca(x, y)
    np.testing.assert_allclose(sim.cca_cov(*sim.covariances(x, y)).rho, rho_ref, atol=TOL)
    assert sim.cca_mean(x, y) == pytest.approx(rho_ref.mean(), abs=TOL)


def test_cca_canonical_variates_are_uncorrelated_with_unit_variance():
    x, y = _pair()
    res = sim.cca_cov(*sim.covariances(x, y))
    u, v = _center(x) @ res.a, _center(y) @ res.b
    n = len(x)
    np.testing.assert_allclose(u.T @ u / n, np.eye(u.shape[1]), atol=TOL)
    np.testing.assert_allclose(u.T @ v / n, np.diag(res.rho), atol=TOL)


@pytest.mark.parametrize("keep", [0.99, 0.8])
def test_svcca_matches_svd_then_cca(keep):
    x, y = _pair(p=10, q=9, seed=2)
    assert sim.svcca(x, y, keep=keep) == pytest.approx(ref_svcca(x, y, keep), abs=TOL)


def test_svcca_drops_low_variance_directions():
    # A direction carrying a negligible share of X's variance but shared exactly with Y lifts
    # plain CCA to a correlation of 1 on that pair; SVCCA's PCA step must discard it.
    rng = np.random.default_rng(4)
    n = 400
    shared = rng.normal(size=n)
    x = np.column_stack([rng.normal(size=(n, 3)) * 10, 1e-3 * shared])
    y = np.column_stack([rng.normal(size=(n, 3)) * 10, 1e-3 * shared])
    assert sim.cca_cov(*sim.covariances(x, y)).rho[0] == pytest.approx(1.0, abs=TOL)
    assert sim.svcca(x, y) < 0.2


def test_pwcca_matches_projection_weighting():
    x, y = _pair(p=7, q=5, seed=5)
    assert sim.pwcca(x, y) == pytest.approx(ref_pwcca(x, y), abs=TOL)
    assert sim.pwcca(y, x) == pytest.approx(ref_pwcca(y, x), abs=TOL)


def test_procrustes_matches_scipy_orthogonal_procrustes():
    x, y = _pair(p=6, q=6)
    assert sim.procrustes_distance(x, y) == pytest.approx(ref_procrustes(x, y), abs=TOL)


def test_procrustes_unequal_widths_zero_padded():
    x, y = _pair(p=8, q=5, seed=6)
    assert sim.procrustes_distance(x, y) == pytest.approx(ref_procrustes(x, y), abs=TOL)


def test_rsa_matches_scipy_spearman():
    x, y = _pair(n=50, seed=7)
    # Jitter so that no row is constant (all ReLUs silent) and every pdist entry is defined.
    jitter = np.random.default_rng(7).uniform(0, 0.01, size=(50, x.shape[1] + y.shape[1]))
    x, y = x + jitter[:, : x.shape[1]], y + jitter[:, x.shape[1]:]
    assert sim.rsa(x, y) == pytest.approx(ref_rsa(x, y), abs=TOL)


def test_rsa_ignores_undefined_pairs():
    x, y = _pair(n=40, seed=8)
    x[3] = 0.0  # a silent image: its correlation distances are undefined
    d_x = sim.rdm(x)
    assert np.isnan(d_x[3, 5]) and np.isfinite(d_x[4, 5])
    keep = np.arange(40) != 3
    expected = ref_rsa(x[keep], y[keep])
    assert sim.rsa(x, y) == pytest.approx(expected, abs=TOL)


def test_rsa_cross_equals_pairwise_rsa():
    reps = [_pair(n=30, seed=s)[k] for s in (24, 25) for k in (0, 1)]
    reps[1][4] = 0.0  # one undefined row, so both code paths run
    cross = sim.rsa_cross(reps[:2], reps[2:])
    for i, j in itertools.product(range(2), range(2)):
        assert cross[i, j] == pytest.approx(sim.rsa(reps[i], reps[2 + j]), abs=1e-12)


def test_matching_correlation_matches_brute_force():
    x, y = _pair(p=4, q=5, seed=9)
    assert sim.matching_correlation(x, y) == pytest.approx(ref_matching(x, y), abs=TOL)


def test_matching_correlation_excludes_dead_units():
    x, y = _pair(p=5, q=5, seed=10)
    x[:, 2] = 0.0
    corr = sim.correlation_from_cov(*sim.covariances(x, y))
    assert np.isnan(corr[2]).all()
    assert sim.matching_correlation(x, y) == pytest.approx(
        ref_matching(np.delete(x, 2, axis=1), y), abs=TOL)


def test_cca_ignores_dead_and_duplicate_units():
    x, y = _pair(p=6, q=5, seed=11)
    padded = np.column_stack([x, np.zeros(len(x)), x[:, 0]])  # a dead unit and a copy
    assert sim.cca_mean(padded, y) == pytest.approx(sim.cca_mean(x, y), abs=TOL)
    assert sim.pwcca(y, padded) == pytest.approx(sim.pwcca(y, x), abs=TOL)


# --------------------------------------------------------------------------- streamed statistics


def test_cov_forms_run_from_streamed_statistics():
    # Accumulate sums over chunks, as the correlate step does, and rebuild the covariances; the
    # cov forms must give the matrix forms' values, whatever the covariance normalisation.
    x, y = _pair(n=300, seed=12)
    s = np.zeros(x.shape[1] + y.shape[1])
    ss = np.zeros((len(s), len(s)))
    for chunk in np.array_split(np.hstack([x, y]), 7):
        s += chunk.sum(axis=0)
        ss += chunk.T @ chunk
    n = len(x)
    cov = (ss - np.outer(s, s) / n) / (n - 1)  # ddof=1 on purpose
    p = x.shape[1]
    cxx, cyy, cxy = cov[:p, :p], cov[p:, p:], cov[:p, p:]
    for name, measure in sim.MEASURES.items():
        if measure.cov is not None:
            assert measure.cov(cxx, cyy, cxy) == pytest.approx(measure.fn(x, y), abs=TOL), name


# --------------------------------------------------------------------------- invariances


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
    rng = np.random.default_rng(13)
    x, y = _pair(seed=13)
    xt = 2.5 * x @ _orthogonal(x.shape[1], rng) + 4.0
    yt = 0.1 * y @ _orthogonal(y.shape[1], rng)
    for name in ["linear_cka", "debiased_cka", "rbf_cka", "procrustes"]:
        assert sim.compute(name, xt, yt) == pytest.approx(sim.compute(name, x, y), abs=TOL), name


def test_linear_cka_not_invariant_to_general_linear_maps():
    # The contrast with CCA below: CKA weights directions by their variance.
    rng = np.random.default_rng(14)
    x, y = _pair(seed=14)
    a = rng.normal(size=(x.shape[1], x.shape[1]))
    assert abs(sim.linear_cka(x @ a, y) - sim.linear_cka(x, y)) > 1e-3


def test_cca_invariant_to_invertible_linear_maps():
    rng = np.random.default_rng(15)
    x, y = _pair(seed=15)
    a = rng.normal(size=(x.shape[1], x.shape[1])) + 3 * np.eye(x.shape[1])
    b = rng.normal(size=(y.shape[1], y.shape[1])) + 3 * np.eye(y.shape[1])
    np.testing.assert_allclose(sim.cca_cov(*sim.covariances(x @ a + 1, y @ b)).rho,
                               sim.cca_cov(*sim.covariances(x, y)).rho, atol=TOL)
    # PWCCA's weights come from X's neurons, so only maps of Y leave it unchanged.
    assert sim.pwcca(x, y @ b) == pytest.approx(sim.pwcca(x, y), abs=TOL)


def test_rsa_invariant_to_per_image_gain_and_unit_order():
    rng = np.random.default_rng(16)
    x, y = _pair(n=50, seed=16)
    x, y = x + 0.01, y + 0.01
    gain = rng.uniform(0.5, 2.0, size=(len(x), 1))
    perm = rng.permutation(x.shape[1])
    assert sim.rsa(gain * x[:, perm] + 0.7, y) == pytest.approx(sim.rsa(x, y), abs=TOL)


def test_matching_invariant_to_unit_order_and_per_unit_affine_maps():
    rng = np.random.default_rng(17)
    x, y = _pair(p=5, q=5, seed=17)
    perm = rng.permutation(5)
    xt = x[:, perm] * rng.uniform(0.5, 2, size=5) + rng.normal(size=5)
    assert sim.matching_correlation(xt, y) == pytest.approx(sim.matching_correlation(x, y), abs=TOL)


@pytest.mark.parametrize("name", sorted(sim.MEASURES))
def test_symmetry_where_the_math_says_so(name):
    x, y = _pair(p=7, q=5, seed=18)
    x, y = x + 0.01, y + 0.01
    measure = sim.MEASURES[name]
    forward, backward = measure.fn(x, y), measure.fn(y, x)
    if measure.symmetric:
        assert forward == pytest.approx(backward, abs=TOL)
    else:
        assert abs(forward - backward) > 1e-4


@pytest.mark.parametrize("name", sorted(sim.MEASURES))
def test_identical_representations_are_maximally_similar(name):
    x, _ = _pair(seed=19)
    x = x + 0.01
    value = sim.compute(name, x, x.copy())
    expected = 1.0 if sim.MEASURES[name].higher_is_similar else 0.0
    assert value == pytest.approx(expected, abs=TOL)


# --------------------------------------------------------------------------- nulls and helpers


def test_cca_saturates_when_units_outnumber_samples():
    # With n - 1 <= p the centered data of X span the whole sample space, so any Y is perfectly
    # predictable and every canonical correlation is 1: why CCA needs the permutation null.
    rng = np.random.default_rng(20)
    x, y = rng.normal(size=(20, 25)), rng.normal(size=(20, 4))
    np.testing.assert_allclose(sim.cca_cov(*sim.covariances(x, y)).rho, 1.0, atol=TOL)


def test_permutation_null_breaks_pairing():
    x, y = _pair(n=200, seed=21, noise=0.2)
    null = sim.permutation_null(sim.linear_cka, x, y, n_permutations=20, seed=0)
    assert null.shape == (20,)
    assert null.max() < sim.linear_cka(x, y)
    np.testing.assert_array_equal(null, sim.permutation_null(sim.linear_cka, x, y, 20, seed=0))
    # Each permuted value is the measure on a row-shuffled copy of y.
    perm = np.random.default_rng(0).permutation(len(y))
    assert null[0] == pytest.approx(sim.linear_cka(x, y[perm]), abs=TOL)


def test_unpaired_inputs_rejected():
    with pytest.raises(ValueError, match="paired"):
        sim.linear_cka(np.ones((10, 3)), np.ones((11, 3)))
    with pytest.raises(KeyError):
        sim.compute("no_such_measure", np.ones((10, 3)), np.ones((10, 3)))


def test_subspace_similarity_is_wang_maximum_match():
    # A planted match: Y mixes X's first 3 units and adds one private unit, so X* = 3 units,
    # Y* = 3 units and s(ε) = 6 / 9 for small ε (Wang §5.1); checked against max_match too.
    from convergent import subspace

    rng = np.random.default_rng(23)
    x = rng.normal(size=(60, 5))
    y = np.column_stack([x[:, :3] @ rng.normal(size=(3, 3)), rng.normal(size=60)])
    value = sim.subspace_similarity(x, y, eps=0.05, device="cpu")
    match = subspace.max_match(x, y, 0.05, device="cpu")
    assert value == pytest.approx((len(match.x) + len(match.y)) / 9)
    assert value == pytest.approx(6 / 9)


def test_permutation_null_with_row_input_moves_whole_inputs():
    """With several rows per input, the library null keeps an input's rows together: a measure
    that compares rows within an input (does y's row k of the input facing x's input equal the
    input's own row k?) sees whole inputs, never a mix."""
    rng = np.random.default_rng(4)
    row_input = np.repeat(np.arange(12), 3)
    x = np.repeat(rng.normal(size=(12, 2)), 3, axis=0)  # rows constant within an input

    def constant_within_inputs(a, b):
        return float(all(np.ptp(b[row_input == i], axis=0).max() == 0 for i in range(12)))

    assert sim.permutation_null(constant_within_inputs, x, x, 10, row_input=row_input).min() == 1.0
    assert sim.permutation_null(constant_within_inputs, x, x, 10).max() == 0.0  # rows mix without it

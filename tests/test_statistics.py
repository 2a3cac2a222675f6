"""convergent.statistics: multi-bootstrap draws and weights against brute force, BCa against the
formula written out, coverage on populations with a known value, permutation p-values uniform
under a true null, Holm against its definition, the seeds-needed estimate against its model."""

import doctest
import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from convergent import blocks as bl
from convergent import statistics as st


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Replicates are many small matrix products: on a busy machine, BLAS threads waiting for
    each other made them 50x slower (measured), so these tests use one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


def test_docstring_examples():
    from convergent import precision, significance

    for module in (st, significance, precision):
        assert doctest.testmod(module).failed == 0, module.__name__


# --------------------------------------------------------------------------- draws and weights


def test_pairwise_replicate_is_the_mean_over_pairs_of_distinct_draws():
    rng = np.random.default_rng(0)
    seeds = [3, 5, 8, 13, 21]
    pairs = list(itertools.combinations(seeds, 2))
    values = rng.normal(size=len(pairs))
    lookup = {frozenset(p): v for p, v in zip(pairs, values)}
    stat = st.pairwise(values, pairs, correct=False)
    for _ in range(50):
        drawn = rng.choice(seeds, size=len(seeds))
        if len(set(drawn)) < 2:
            continue
        # brute force: every pair of draw positions i < j that drew different seeds
        expected = np.mean([lookup[frozenset((drawn[i], drawn[j]))]
                            for i, j in itertools.combinations(range(len(drawn)), 2) if drawn[i] != drawn[j]])
        counts = np.array([[np.sum(drawn == s) for s in stat.nets]])
        assert stat(counts)[0] == pytest.approx(expected, abs=1e-12)
    assert stat.estimate() == pytest.approx(values.mean(), abs=1e-12)


def test_draws_are_conditioned_on_a_pair_and_inputs_do_not_depend_on_networks():
    res = st.draw([0, 1, 2], 7, replicates=2000, seed=4, min_distinct={"seeds": 2})
    assert ((res.net_counts > 0).sum(1) >= 2).all() and (res.net_counts.sum(1) == 3).all()
    assert (res.block_counts.sum(1) == 7).all() and res.varying == ("seeds",)
    two = st.draw([0, 1], 7, replicates=50, seed=4, min_distinct={"seeds": 2})
    assert (two.net_counts == 1).all() and two.varying == ()  # one admissible draw
    other = st.draw({"trained": [0, 1, 2, 3], "untrained": [9]}, 7, replicates=2000, seed=4)
    np.testing.assert_array_equal(other.block_counts, res.block_counts)
    assert (other.net_counts[:, -1] == 1).all()


def test_one_seed_pair_gives_an_interval_over_inputs_and_says_so():
    rng = np.random.default_rng(1)
    fn, n_blocks = st.mean_over_inputs(rng.normal(0.5, 0.1, size=40))
    ci = st.bootstrap(st.pairwise([fn], [(0, 1)], n_blocks=n_blocks))
    assert ci.over == "inputs" and "over probe inputs only" in ci.note
    assert ci.lo < 0.5 < ci.hi and ci.blocks == 40 and ci.seeds == 0
    assert ci.row()["interval"] == "95% percentile over inputs"


def test_difference_of_statistics_uses_shared_draws():
    rng = np.random.default_rng(2)
    trained = [0, 1, 2, 3]
    groups = {"trained": trained, "untrained": [100]}
    within = list(itertools.combinations(trained, 2))
    baseline = [(s, 100) for s in trained]
    per_input = {p: rng.normal(0.6, 0.05, 30) for p in within}
    per_input.update({p: rng.normal(0.2, 0.05, 30) for p in baseline})
    fns = {p: st.mean_over_inputs(v)[0] for p, v in per_input.items()}
    a = st.pairwise([fns[p] for p in within], within, groups=groups, n_blocks=30, label="trained")
    b = st.pairwise([fns[p] for p in baseline], baseline, groups=groups, n_blocks=30, label="untrained")
    out = st.bootstrap({"a": a, "b": b, "diff": a - b}, replicates=500, seed=3)
    np.testing.assert_allclose(out["diff"].distribution, out["a"].distribution - out["b"].distribution, atol=1e-12)
    assert out["diff"].over == "seeds and inputs" and out["diff"].lo > 0.3
    assert out["b"].over == "seeds and inputs"  # the trained seed varies, the single untrained net does not
    assert st.bootstrap_p_value(out["diff"]) == pytest.approx(1 / 501)
    with pytest.raises(ValueError, match="different input blocks"):
        st.bootstrap(a - st.pairwise([st.mean_over_inputs(np.ones(5))[0]], [(0, 1)], n_blocks=5))


def test_correction_makes_the_seed_variance_that_of_the_jackknife():
    # Additive pair values: the jackknife variance of the pair mean is unbiased (4 var(u) / S);
    # the corrected bootstrap matches it, the textbook one falls short by (S-2)^2 / (S(S-1)) (its
    # linear part; the weights' nonlinear terms add a little, ~10 % at 8 seeds, 2 % at 16).
    rng = np.random.default_rng(3)
    s = 16
    u = rng.normal(size=s)
    pairs = list(itertools.combinations(range(s), 2))
    values = [u[a] + u[b] for a, b in pairs]
    jack = 4 * np.var(u, ddof=1) / s
    plain = st.bootstrap(st.pairwise(values, pairs, correct=False), replicates=20000, seed=1).distribution.var()
    fixed = st.bootstrap(st.pairwise(values, pairs), replicates=20000, seed=1).distribution.var()
    assert plain / jack == pytest.approx((s - 2) ** 2 / (s * (s - 1)), rel=0.05)
    assert fixed / jack == pytest.approx(1.0, rel=0.05)


def _bca_reference(reps, estimate, jackknives, level):
    """BCa written out (Efron & Tibshirani 1993, eqs. 14.14-14.15; several samples as in scipy:
    the acceleration sums the jackknife influence over every resampled dimension)."""
    z0 = sps.norm.ppf((np.sum(reps < estimate) + np.sum(reps <= estimate)) / (2 * len(reps)))
    num = den = 0.0
    for theta_i in jackknives:
        n = len(theta_i)
        infl = (n - 1) * (theta_i.mean() - theta_i)
        num += np.sum(infl**3) / n**3
        den += np.sum(infl**2) / n**2
    a = num / (6 * den**1.5)
    z = sps.norm.ppf([(1 - level) / 2, (1 + level) / 2])
    alphas = sps.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    return np.quantile(reps, alphas)


def test_bca_equals_the_formula_with_jackknife_over_seeds_and_blocks():
    rng = np.random.default_rng(4)
    s, n = 6, 25
    pairs = list(itertools.combinations(range(s), 2))
    per_input = [np.exp(rng.normal(0, 0.5, n)) + 0.1 * (a + b) for a, b in pairs]  # skewed
    fns = [st.mean_over_inputs(v)[0] for v in per_input]
    stat = st.pairwise(fns, pairs, n_blocks=n)
    ci = st.bootstrap(stat, replicates=2000, seed=5, method="bca")
    est = stat.estimate()
    seeds_out = []
    for leave in range(s):
        counts = np.ones((1, s), int)
        counts[0, leave] = 0
        seeds_out.append(stat(counts)[0])
    blocks_out = []
    for leave in range(n):
        w = np.ones((1, n), int)
        w[0, leave] = 0
        blocks_out.append(stat(None, w)[0])
    lo, hi = _bca_reference(ci.distribution, est, [np.array(seeds_out), np.array(blocks_out)], 0.95)
    assert (ci.lo, ci.hi) == pytest.approx((lo, hi), abs=1e-12)
    assert ci.method == "bca" and ci.over == "seeds and inputs"
    pct = st.bootstrap(stat, replicates=2000, seed=5)
    assert (pct.lo, pct.hi) == pytest.approx(tuple(np.quantile(pct.distribution, [0.025, 0.975])), abs=1e-12)
    basic = st.bootstrap(stat, replicates=2000, seed=5, method="basic")
    assert (basic.lo, basic.hi) == pytest.approx((2 * est - pct.hi, 2 * est - pct.lo), abs=1e-12)


def test_intervals_from_stored_replicates_equal_the_in_process_ones():
    rng = np.random.default_rng(14)
    s, n = 5, 20
    pairs = list(itertools.combinations(range(s), 2))
    fns = [st.mean_over_inputs(np.exp(rng.normal(0, 0.5, n)) + 0.1 * a * b)[0] for a, b in pairs]
    stat = st.pairwise(fns, pairs, n_blocks=n)
    jack = st.jackknife(stat, replicates=800, seed=3)
    assert [len(j) for j in jack] == [s, n]
    for method in st.METHODS:
        ci = st.bootstrap(stat, replicates=800, seed=3, method=method)
        got = st.interval_from(ci.estimate, ci.distribution, method=method, jackknife=jack)
        assert got == pytest.approx((ci.lo, ci.hi), abs=1e-12), method


def test_a_biased_statistic_is_flagged_and_the_basic_interval_recentres_it():
    # linear CKA of 40 units on 60 independent rows: replicates on duplicated rows are biased up
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(60, 40)), rng.normal(size=(60, 40))
    pair = bl.PairBlocks.from_rows(x, y, np.arange(60), 60)
    stat = st.pairwise([bl.pair_statistic(pair, "linear_cka")], [(0, 1)], n_blocks=60)
    pct = st.bootstrap(stat, replicates=500)
    assert pct.bias > 0.5 * pct.se and "bootstrap bias" in pct.note
    assert pct.lo > pct.estimate  # the percentile interval misses its own estimate
    basic = st.bootstrap(stat, replicates=500, method="basic")
    assert basic.hi < pct.estimate and "bootstrap bias" not in basic.note


# --------------------------------------------------------------------------- coverage


def test_coverage_of_a_pairwise_statistic_over_seeds_and_inputs():
    """Pair values v_ab,i = mu + u_a + u_b + e_ab + g_i + h_ab,i (seed, pair, input and residual
    effects) over 10 seeds and 30 probe inputs; the population value is mu. (Measured: 96.5 %.)"""
    rng = np.random.default_rng(6)
    s, n, mu = 10, 30, 0.5
    pairs = list(itertools.combinations(range(s), 2))
    ia, ib = np.array(pairs).T
    hits = []
    for experiment in range(200):
        u, e = rng.normal(0, 0.05, s), rng.normal(0, 0.03, len(pairs))
        g = rng.normal(0, 0.05, n)
        values = mu + (u[ia] + u[ib] + e)[:, None] + g[None, :] + rng.normal(0, 0.03, (len(pairs), n))
        fns = [st.mean_over_inputs(v)[0] for v in values]
        ci = st.bootstrap(st.pairwise(fns, pairs, n_blocks=n), replicates=500, seed=experiment)
        hits.append(ci.contains(mu))
    assert np.mean(hits) >= 0.90, np.mean(hits)


def test_coverage_over_inputs_needs_whole_images_as_resampling_units():
    """Linear CKA of one pair over images x positions, rows of one image correlated (rho = 0.9).
    Blocks of whole images cover the population CKA (measured: 96 %); resampling rows one by one
    does not (67.5 %)."""
    rng = np.random.default_rng(7)
    k = p = 3
    a_mix, c_mix = rng.normal(size=(p, k)), rng.normal(size=(p, k))
    sxx, syy, sxy = a_mix @ a_mix.T + np.eye(p), c_mix @ c_mix.T + np.eye(p), a_mix @ c_mix.T
    truth = np.sum(sxy**2) / (np.linalg.norm(sxx) * np.linalg.norm(syy))
    n_images, per_image, rho, n_blocks = 100, 8, 0.9, 40
    image = np.repeat(np.arange(n_images), per_image)
    hits = {"images": [], "rows": []}
    for experiment in range(200):
        latent = (np.sqrt(rho) * rng.normal(size=(n_images, k))[image]
                  + np.sqrt(1 - rho) * rng.normal(size=(len(image), k)))
        x = latent @ a_mix.T + rng.normal(size=(len(image), p))
        y = latent @ c_mix.T + rng.normal(size=(len(image), p))
        for unit, row_block, count in (("images", bl.input_blocks(n_images, n_blocks, experiment)[image], n_blocks),
                                       ("rows", np.arange(len(image)), len(image))):
            pair = bl.PairBlocks.from_rows(x, y, row_block, count)
            stat = st.pairwise([bl.pair_statistic(pair, "linear_cka")], [(0, 1)], n_blocks=count)
            hits[unit].append(st.bootstrap(stat, replicates=500, seed=experiment).contains(truth))
    assert np.mean(hits["images"]) >= 0.90, np.mean(hits["images"])
    assert np.mean(hits["rows"]) < 0.80, np.mean(hits["rows"])  # the test can tell a too-narrow interval


# --------------------------------------------------------------------------- tests


def test_permutation_p_values_are_uniform_under_the_null_when_whole_inputs_move():
    rng = np.random.default_rng(8)
    n_images, per_image = 30, 4
    image = np.repeat(np.arange(n_images), per_image)

    def corr(x, y):  # the permutations keep each side's sums: the dot product ranks as Pearson's r
        return x[:, 0] @ y[:, 0]

    def clustered():  # rows of one image share most of their value
        return 2 * rng.normal(size=(n_images, 1))[image] + rng.normal(size=(len(image), 1))

    whole, rows = [], []
    for experiment in range(200):
        x, y = clustered(), clustered()  # independent networks: a true null
        whole.append(st.permutation_test(corr, x, y, permutations=99, seed=experiment, row_input=image).p_value)
        rows.append(st.permutation_test(corr, x, y, permutations=99, seed=experiment).p_value)
    assert sps.kstest(whole, "uniform").pvalue > 0.01
    assert sps.kstest(rows, "uniform").pvalue < 0.001  # rows are not exchangeable: too small
    assert min(whole) >= 1 / 100  # (1 + count) / (1 + permutations): never 0


def test_permutation_test_finds_a_real_pairing_and_counts_permutations():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 3))
    y = x @ rng.normal(size=(3, 2)) + 0.5 * rng.normal(size=(40, 2))
    res = st.permutation_test(lambda a, b: np.abs(np.corrcoef(a.T, b.T)[:3, 3:]).mean(), x, y, permutations=199)
    assert res.permutations == 199 and res.p_value == pytest.approx(1 / 200) and not res.exact
    assert st.permutation_p_value(res.statistic, res.null) == pytest.approx(res.p_value)
    with pytest.raises(ValueError, match="same number of rows"):
        st.input_rows(np.array([0, 0, 1]))


def test_holm_against_its_definition():
    rng = np.random.default_rng(10)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 8))
        m = len(p)
        order = np.argsort(p)
        expected = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):  # step down: p_(i) (m - i + 1), never below the previous
            running = max(running, min(1.0, (m - rank) * p[i]))
            expected[i] = running
        np.testing.assert_allclose(st.holm(p), expected)
        # rejecting at 0.05 is Holm's sequential procedure
        alpha, reject = 0.05, np.zeros(m, bool)
        for rank, i in enumerate(order):
            if p[i] > alpha / (m - rank):
                break
            reject[i] = True
        np.testing.assert_array_equal(st.holm(p) <= alpha, reject)
    out = st.holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


# --------------------------------------------------------------------------- how many seeds


def test_variance_components_recover_seed_and_pair_variance():
    rng = np.random.default_rng(11)
    s = 7
    pairs = list(itertools.combinations(range(s), 2))
    ia, ib = np.array(pairs).T
    u = rng.normal(size=s)
    exact = st.variance_components(u[ia] + u[ib] + 0.3, pairs)  # additive: no pair effect
    assert exact.seed == pytest.approx(np.var(u, ddof=1)) and exact.pair == pytest.approx(0, abs=1e-20)
    seed_var, pair_var = [], []
    for _ in range(4000):  # method of moments: unbiased for the pair variance, seed variance floored at 0
        u = rng.normal(0, 0.5, s)
        c = st.variance_components(u[ia] + u[ib] + rng.normal(0, 0.4, len(pairs)), pairs)
        seed_var.append(c.seed)
        pair_var.append(c.pair)
    assert np.mean(pair_var) == pytest.approx(0.16, rel=0.05)
    assert np.mean(seed_var) == pytest.approx(0.25, rel=0.07)
    # the model's variance of the pair mean is the variance over populations
    means = [(u[ia] + u[ib] + rng.normal(0, 0.4, len(pairs))).mean() for u in rng.normal(0, 0.5, (4000, s))]
    model = st.VarianceComponents(0, 0.25, 0.16, s).variance_of_mean(s)
    assert np.var(means) == pytest.approx(model, rel=0.07)


def test_seeds_for_width_is_the_smallest_count_reaching_the_width():
    rng = np.random.default_rng(12)
    s = 5
    pairs = list(itertools.combinations(range(s), 2))
    ia, ib = np.array(pairs).T
    values = rng.normal(0, 0.05, s)[ia] + rng.normal(0, 0.05, s)[ib] + rng.normal(0, 0.02, len(pairs))
    comp = st.variance_components(values, pairs)
    z = sps.norm.ppf(0.975)
    for width, input_sd in ((0.05, 0.0), (0.02, 0.004)):
        plan = st.seeds_for_width(values, width, pairs=pairs, input_sd=input_sd)
        def w(n):
            return 2 * z * math.sqrt(comp.variance_of_mean(n) + input_sd**2)
        assert w(plan.seeds) <= width < w(plan.seeds - 1)
        assert plan.current_width == pytest.approx(w(s))
    assert st.seeds_for_width(values, 0.01, pairs=pairs, input_sd=0.01).seeds is None
    per_seed = st.seeds_for_width([0.91, 0.93, 0.92, 0.95], 0.01)
    assert 2 * z * math.sqrt(np.var([0.91, 0.93, 0.92, 0.95], ddof=1) / per_seed.seeds) <= 0.01
    assert st.seeds_for_width([0.8], 0.1, pairs=[(0, 1)]).seeds is None


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="interval method"):
        st.bootstrap(st.pairwise([1.0, 2.0, 3.0], [(0, 1), (0, 2), (1, 2)]), method="studentized")
    with pytest.raises(ValueError, match="one value per pair"):
        st.pairwise([1.0], [(0, 1), (0, 2)])
    with pytest.raises(ValueError, match="two different networks"):
        st.pairwise([1.0], [(0, 0)])
    with pytest.raises(ValueError, match="in groups"):
        st.draw({"a": [0, 1], "b": [1, 2]}, None)


def test_config_section_has_defaults_and_names_bad_values():
    from conftest import REPO, tiny_config
    from convergent.config import ConfigError, validate

    schema = REPO / "workflow" / "schemas" / "config.schema.yaml"
    without = tiny_config()
    without.pop("statistics", None)  # the schema's defaults, not the tiny run's small settings
    cfg = validate(without, schema)["statistics"]
    assert (cfg["replicates"], cfg["interval"], cfg["level"], cfg["permutations"]) == (1000, "percentile", 0.95, 999)
    bad = tiny_config()
    bad["statistics"] = {"interval": "studentized", "layer_differences": [["conv1"]]}
    with pytest.raises(ConfigError) as error:
        validate(bad, schema)
    assert "statistics.interval" in str(error.value) and "bca" in str(error.value)
    assert "statistics.layer_differences.0" in str(error.value)


# --------------------------------------------------------------------------- whole-input permutations


def test_permute_inputs_moves_whole_inputs_among_inputs_of_equal_size():
    rng = np.random.default_rng(12)
    counts = rng.integers(1, 4, 30)  # unequal rows per input, as a row subsample leaves them
    row_input = rng.permutation(np.repeat(np.arange(30) * 7, counts))  # any labels, any row order
    rows_of = {i: np.flatnonzero(row_input == i) for i in np.unique(row_input)}
    moved = 0
    for draw in range(20):
        order = st.permute_inputs(row_input, np.random.default_rng(draw))
        assert sorted(order) == list(range(len(row_input)))
        for i, rows in rows_of.items():
            sources = row_input[order[rows]]
            assert len(set(sources)) == 1  # the rows of one input come from one input ...
            np.testing.assert_array_equal(order[rows], rows_of[sources[0]])  # ... all of it, in order
            moved += sources[0] != i
    assert moved > 0.8 * 20 * 30  # and inputs do move


def test_permute_inputs_null_is_exact_where_a_row_shuffle_is_not():
    """Two unrelated representations whose rows within an image are correlated (rho = 0.9):
    linear CKA against the whole-image null gives uniform p-values; against rows shuffled one by
    one, far too many small ones (the null's CKA is too low)."""
    rng = np.random.default_rng(13)
    n_images, per_image, k, perms = 30, 6, 3, 39
    image = np.repeat(np.arange(n_images), per_image)

    def clustered():
        return 0.95 * rng.normal(size=(n_images, k))[image] + 0.3 * rng.normal(size=(len(image), k))

    p = {"images": [], "rows": []}
    for experiment in range(150):
        x, y = clustered(), clustered()
        observed = bl_free_cka(x, y)
        for unit in p:
            gen = np.random.default_rng(experiment)
            null = [bl_free_cka(x, y[st.permute_inputs(image, gen) if unit == "images" else gen.permutation(len(y))])
                    for _ in range(perms)]
            p[unit].append(st.permutation_p_value(observed, np.array(null)))
    assert sps.kstest(p["images"], "uniform").pvalue > 0.01
    assert np.mean(np.array(p["rows"]) <= 0.1) > 0.3  # the row shuffle's test rejects far too often


def bl_free_cka(x, y):
    """Linear CKA written out (Kornblith et al. 2019, eq. 5), independent of convergent.similarity."""
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_equal_values_carry_no_bias_note():
    """Seeds that all score the same: replicates differ from the estimate by rounding only, which
    is no bias (the accuracy table of a short run said otherwise)."""
    for stat in (st.per_net([0.08, 0.08, 0.08], bounds=(0.0, 1.0)), st.per_net([0.1] * 5),
                 st.pairwise([0.3] * 6, list(itertools.combinations(range(4), 2)))):
        ci = st.bootstrap(stat, replicates=200)
        assert "bias" not in ci.note and ci.lo == pytest.approx(ci.estimate) == pytest.approx(ci.hi)

"""convergent.replicates and convergent.intervals: stored replicates equal the measures recomputed on
the resampled raw rows, permutation statistics equal the project's measures under every permutation,
intervals built from stored replicates equal the ones built from the data, and the tests table
against its definitions (differences of pair means, Holm, permutation p-values)."""

import doctest
import itertools

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from conftest import write_conv_activations
from convergent import blocks as bl
from convergent import intervals as iv
from convergent import replicates as rp
from convergent import similarity as sim
from convergent import statistics as st

IMAGES, PER_IMAGE, UNITS = 40, 3, 5
SETTINGS = iv.Settings(replicates=200, seed=3, level=0.95, method="percentile", correct=True)
CFG = {"seed": 3, "replicates": 200, "blocks": 10, "max_block_bytes": 10**9, "permutations": 49,
       "permutation_inputs": 30, "interval": "percentile"}
TRAINED = ["seed0", "seed1", "seed2"]
PAIRS = list(itertools.combinations(TRAINED, 2))
BASELINE = [(s, "untrained9") for s in TRAINED]


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Three 'trained' networks sharing a latent code and one 'untrained' network that does not."""
    root = tmp_path_factory.mktemp("acts")
    rng = np.random.default_rng(0)
    image = np.repeat(np.arange(IMAGES), PER_IMAGE)
    positions = np.stack([image, rng.integers(0, 4, len(image)), rng.integers(0, 4, len(image))], 1)
    latent = rng.normal(size=(IMAGES, 3))[image] + 0.5 * rng.normal(size=(len(image), 3))
    paths = {}
    for i, name in enumerate([*TRAINED, "untrained9"]):
        source = latent if name.startswith("seed") else rng.normal(size=latent.shape)
        x = np.maximum(source @ rng.normal(size=(3, UNITS)) + 0.4 * rng.normal(size=(len(image), UNITS)), 0)
        paths[name] = root / f"{name}.h5"
        write_conv_activations(paths[name], i, x, positions, np.arange(IMAGES), 4, (3, 1, 0))
    return paths


@pytest.fixture(scope="module")
def layer(nets):
    with threadpool_limits(1, user_api="blas"):
        return rp.layer_replicates(nets, PAIRS, "conv1", CFG, baseline_pairs=BASELINE,
                                   permutation_pair=PAIRS[0], log=None)


def test_docstring_examples():
    assert doctest.testmod(iv).failed == 0


def read(path):
    from convergent.activations import read_positions, read_samples

    return read_samples(path, "conv1"), read_positions(path, "conv1")[:, 0]


def test_stored_replicates_equal_the_measures_on_resampled_rows(nets, layer):
    """Reference: the project's measures on the rows each draw repeats, recomputed from the files."""
    x, image = read(nets["seed0"])
    y, _ = read(nets["seed2"])
    untrained, _ = read(nets["untrained9"])
    row_block = layer.input_block[image]
    for r in (0, 7, 199):
        rows = bl.resampled_rows(row_block, layer.draws[r])
        expected = {"linear_cka": sim.linear_cka(x[rows], y[rows]),
                    "matching": sim.matching_correlation(x[rows], y[rows])}
        for measure, value in expected.items():
            stored = layer.values[layer.measures.index(measure), layer.pairs.index("seed0-seed2"), r]
            assert stored == pytest.approx(value, abs=1e-10)
        baseline = layer.values[layer.measures.index("linear_cka"), layer.pairs.index("seed0-untrained9"), r]
        assert baseline == pytest.approx(sim.linear_cka(x[rows], untrained[rows]), abs=1e-10)
    assert layer.estimate[layer.measures.index("matching"), 1] == pytest.approx(
        sim.matching_correlation(x, y), abs=1e-12)
    # baseline pairs keep only the measures the tests need
    assert not layer.has("semi", "seed0", "untrained9") and layer.has("semi", "seed0", "seed1")


def test_draws_are_the_ones_the_bootstrap_makes(layer):
    expected = st.draw({"any": ("a", "b", "c")}, layer.n_blocks, CFG["replicates"], CFG["seed"]).block_counts
    np.testing.assert_array_equal(layer.draws, expected)
    assert layer.n_blocks == 10 and np.bincount(layer.input_block).tolist() == [4] * 10


def test_save_and_load_round_trip(layer, tmp_path):
    layer.save(tmp_path / "conv1.h5")
    back = rp.LayerReplicates.load(tmp_path / "conv1.h5")
    assert back.pairs == layer.pairs and back.measures == layer.measures
    np.testing.assert_array_equal(back.values, layer.values)
    np.testing.assert_array_equal(back.draws, layer.draws)
    assert back.permutation["matching"]["p_value"] == layer.permutation["matching"]["p_value"]
    np.testing.assert_array_equal(back.permutation["linear_cka"]["null"], layer.permutation["linear_cka"]["null"])


SUBSPACE_EPS = (0.3, 0.5, 0.8)
SUBSPACE_SAMPLE = {"sample_size": 80, "repeats": 3, "sample_seed": 4}


def subspace_rows(nets):
    from convergent.subspace_layers import row_draws

    x, _ = read(nets["seed0"])
    return row_draws(len(x), SUBSPACE_SAMPLE["sample_size"], SUBSPACE_SAMPLE["repeats"],
                     SUBSPACE_SAMPLE["sample_seed"], "conv1")


@pytest.fixture(scope="module")
def subspace_layer(nets):
    """s(eps) replicates as the `bootstrap_subspace` rule stores them (its own job, same blocks)."""
    measures = [rp.subspace_measure(e) for e in SUBSPACE_EPS]
    with threadpool_limits(1, user_api="blas"):
        return rp.layer_replicates(nets, PAIRS, "conv1", CFG, measures=measures, baseline_pairs=BASELINE,
                                   baseline_measures=measures, log=None, subspace_rows=subspace_rows(nets))


def test_subspace_replicates_are_the_subspace_rules_s_eps_on_resampled_inputs(nets, layer, subspace_layer):
    """The estimate is what the `subspace` rule computes (compare_layer: the mean over repeats of
    row samples); replicate r is that mean with each repeat's rows weighted by their input's block
    count, recomputed here from the raw rows with convergent.subspace (uncentered, as Wang et al.)."""
    from convergent.subspace import similarity_curve
    from convergent.subspace_layers import compare_layer

    np.testing.assert_array_equal(subspace_layer.draws, layer.draws)
    np.testing.assert_array_equal(subspace_layer.input_block, layer.input_block)
    x, image = read(nets["seed1"])
    y, _ = read(nets["untrained9"])
    p = subspace_layer.pairs.index("seed1-untrained9")
    stored = [subspace_layer.measures.index(rp.subspace_measure(e)) for e in SUBSPACE_EPS]
    rule = compare_layer(x.astype(float), y.astype(float), layer="conv1", kind="conv", eps_grid=SUBSPACE_EPS,
                         seed=SUBSPACE_SAMPLE["sample_seed"], sample_size=SUBSPACE_SAMPLE["sample_size"],
                         repeats=SUBSPACE_SAMPLE["repeats"], device="cpu")
    np.testing.assert_allclose(subspace_layer.estimate[stored, p], rule.similarity.mean(0), atol=1e-12)
    row_block = subspace_layer.input_block[image]
    for r in (0, 11, 199):
        expected = np.mean([similarity_curve(x[rows][bl.resampled_rows(row_block[rows], subspace_layer.draws[r])],
                                             y[rows][bl.resampled_rows(row_block[rows], subspace_layer.draws[r])],
                                             SUBSPACE_EPS, device="cpu")
                            for rows in subspace_rows(nets)], axis=0)
        np.testing.assert_allclose(subspace_layer.values[stored, p, r], expected, atol=1e-12)
    assert subspace_layer.values[stored, p].std(1).max() > 0  # the draws move s(eps)


def _subspace_frame(replicates):
    rows = []
    for pair in replicates.pairs:
        a, b = iv.split_pair(pair)
        for eps in SUBSPACE_EPS:
            rows.append({"layer": "conv1", "a": a, "b": b, "baseline": b.startswith("untrained"), "eps": eps,
                         "s": replicates.value(rp.subspace_measure(eps), a, b), "s_std_repeats": 0.0,
                         "d": 80, "repeats": 3, "units_a": UNITS, "units_b": UNITS, "dead_a": 0, "dead_b": 0,
                         "rows_per_unit": 8.0, "undersampled": False})
    return pd.DataFrame(rows)


def test_subspace_intervals_resample_inputs_where_replicates_are_given(subspace_layer):
    from convergent.subspace_results import summarize_similarity

    frame = _subspace_frame(subspace_layer)
    table = summarize_similarity(frame, ["conv1"])
    seeds_only = iv.subspace_intervals(frame, table, SETTINGS).set_index("eps")
    both = iv.subspace_intervals(frame, table, SETTINGS, {"conv1": subspace_layer}).set_index("eps")
    assert seeds_only["note"].str.contains("inputs fixed").all()
    assert both["note"].str.startswith("over seeds and inputs").all()
    assert both["note"].str.contains(iv.SUBSPACE_INPUTS, regex=False).all()
    assert both["baseline_note"].str.contains("input blocks").all()
    varied = both[both["hi"] > both["lo"]]
    assert len(varied) and ((varied["lo"] >= 0) & (varied["hi"] <= 1)).all()
    # a layer without stored s(eps) at that eps keeps its interval over seeds only
    other = iv.subspace_intervals(frame.assign(eps=frame["eps"] + 0.01), table.assign(eps=table["eps"] + 0.01),
                                  SETTINGS, {"conv1": subspace_layer})
    assert other["note"].str.contains("inputs fixed").all()
    # an undersampled layer's s(eps) is not resampled over inputs: duplicated inputs lower the rank
    flagged = frame.assign(undersampled=True)
    few = iv.subspace_intervals(flagged, summarize_similarity(flagged, ["conv1"]), SETTINGS, {"conv1": subspace_layer})
    assert few["note"].str.contains(iv.SUBSPACE_UNDERSAMPLED, regex=False).all()
    assert not few["note"].str.contains("input blocks").any()
    # replicates of other rows than the table's (a stale file) are refused, not mixed in
    moved = frame.assign(s=frame["s"] + 0.01 * (frame["eps"] == 0.5))
    with pytest.raises(ValueError, match=r"s\(eps=0.5\) replicates of conv1 seed0-seed1 were computed on other rows"):
        iv.subspace_intervals(moved, summarize_similarity(moved, ["conv1"]), SETTINGS, {"conv1": subspace_layer})


def test_subspace_settings_take_their_own_replicates():
    cfg = {"replicates": 1000, "seed": 2, "level": 0.9, "interval": "percentile", "correct": True}
    assert iv.Settings.for_subspace({**cfg, "subspace_replicates": 200}).replicates == 200
    assert iv.Settings.for_subspace({**cfg, "subspace_replicates": 0}).replicates == 1000


@pytest.mark.parametrize("measure, reference", [("matching", sim.matching_correlation), ("linear_cka", sim.linear_cka)])
def test_permutation_statistic_is_the_measure_under_any_permutation(measure, reference):
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(50, 4)), 0)
    y = np.maximum(x @ rng.normal(size=(4, 6)) + rng.normal(size=(50, 6)), 0)
    y[:, 2] = 1.5  # a dead unit
    xp, yp, fn = rp.permutation_statistic(measure, x, y)
    for _ in range(3):
        perm = rng.permutation(50)
        assert fn(xp, yp[perm]) == pytest.approx(reference(x, y[perm]), abs=1e-12)


def test_permutation_tests_shuffle_whole_inputs(layer):
    for measure in ("matching", "linear_cka"):
        test = layer.permutation[measure]
        assert test["permutations"] == CFG["permutations"] and len(test["null"]) == CFG["permutations"]
        k = np.count_nonzero(test["null"] >= test["observed"] - 1e-12)
        assert test["p_value"] == pytest.approx((1 + k) / (1 + CFG["permutations"]))
    assert layer.permutation_inputs == CFG["permutation_inputs"]
    # shared latent code: far above the shuffled pairing
    assert layer.permutation["linear_cka"]["p_value"] == pytest.approx(1 / 50)


def test_interval_from_stored_replicates_equals_the_one_from_the_data(nets, layer):
    """The table path (stored replicates) against pairwise() on functions of the raw rows."""
    values = {p: layer.value("linear_cka", *p) for p in PAIRS}
    from_store = iv.mean_interval(values, SETTINGS, layer, "linear_cka")
    data = {n: read(nets[n]) for n in TRAINED}
    row_block = layer.input_block[data["seed0"][1]]

    def on_rows(a, b):
        x, y = data[a][0], data[b][0]
        return lambda w: np.array([sim.linear_cka(x[r], y[r]) for r in
                                   (bl.resampled_rows(row_block, wi) for wi in np.atleast_2d(w))])

    direct = st.bootstrap(st.pairwise([on_rows(*p) for p in PAIRS], PAIRS, n_blocks=layer.n_blocks,
                                      bounds=(0.0, 1.0)),  # linear CKA's range, as the table takes it
                          replicates=SETTINGS.replicates, seed=SETTINGS.seed)
    assert from_store.over == "seeds and inputs" and from_store.blocks == 10
    assert (from_store.lo, from_store.hi) == pytest.approx((direct.lo, direct.hi), abs=1e-10)
    assert iv.describe(from_store).startswith("over seeds and inputs (3 seeds, 10 input blocks)")


def test_one_seed_pair_is_over_inputs_only(layer):
    ci = iv.mean_interval({PAIRS[0]: layer.value("matching", *PAIRS[0])}, SETTINGS, layer, "matching")
    assert ci.over == "inputs" and ci.lo <= ci.estimate <= ci.hi
    assert "one seed pair" in iv.describe(ci)


def test_tests_table_against_its_definitions(layer):
    reps = {"conv1": layer, "conv2": layer}
    table = iv.tests_table(reps, PAIRS, BASELINE, ["untrained9"], SETTINGS, [("conv1", "conv2")])
    assert set(table["test"]) == {"trained vs untrained", "permutation null", "layer difference"}
    gap = table[(table["test"] == "trained vs untrained") & (table["measure"] == "matching")].iloc[0]
    trained = np.mean([layer.value("matching", *p) for p in PAIRS])
    untrained = np.mean([layer.value("matching", *p) for p in BASELINE])
    assert gap["estimate"] == pytest.approx(trained - untrained)
    # the same difference put together by hand: trained and untrained networks resampled as groups
    groups = {"trained": tuple(TRAINED), "untrained": ("untrained9",)}

    def mean_of(pairs):
        return st.pairwise([layer.pair_statistic("matching", *p) for p in pairs], pairs, groups=groups,
                           n_blocks=layer.n_blocks, bounds=(-1.0, 1.0))  # a correlation's range

    ci = st.bootstrap(mean_of(PAIRS) - mean_of(BASELINE), replicates=SETTINGS.replicates, seed=SETTINGS.seed)
    assert (gap["lo"], gap["hi"]) == pytest.approx((ci.lo, ci.hi))
    assert gap["p_value"] == pytest.approx(st.bootstrap_p_value(ci, 0.0, "greater"))
    assert gap["lo"] <= gap["estimate"] <= gap["hi"]
    perm = table[(table["test"] == "permutation null") & (table["measure"] == "linear_cka")]
    assert perm["p_value"].tolist() == [layer.permutation["linear_cka"]["p_value"]] * 2
    # Holm over the two layers of one test and measure
    for _, group in table.groupby(["test", "measure"]):
        np.testing.assert_allclose(group["p_adjusted"], st.holm(group["p_value"].to_numpy()))
    same = table[table["test"] == "layer difference"]
    assert (same["estimate"] == 0).all() and (same["p_value"] == 1).all() and not same["reject"].any()
    assert table["p_value"].between(0, 1).all() and table["correction"].str.startswith("Holm").all()


def test_seeds_needed_matches_the_precision_model(layer):
    table = iv.seeds_needed_table({"conv1": layer}, PAIRS, SETTINGS, 0.05, measures=["matching"])
    row = table.iloc[0]
    values = [layer.value("matching", *p) for p in PAIRS]
    plan = st.seeds_for_width(values, 0.05, pairs=PAIRS, input_sd=row["input_sd"])
    assert row["seeds"] == 3 and row["seed_sd"] == pytest.approx(plan.seed_sd)
    assert row["lo"] <= row["estimate"] <= row["hi"] and row["input_sd"] > 0
    assert (pd.isna(row["seeds_needed"]) and plan.seeds is None) or row["seeds_needed"] == plan.seeds


def test_frame_intervals_over_seeds_per_group():
    rng = np.random.default_rng(2)
    pairs = list(itertools.combinations(range(4), 2))
    frame = pd.DataFrame([{"layer": layer, "a": a, "b": b, "s": rng.uniform()} for layer in ("l1", "l2")
                          for a, b in pairs])
    out = iv.frame_intervals(frame, ["layer"], "s", SETTINGS)
    for layer, row in out.set_index("layer").iterrows():
        sub = frame[frame["layer"] == layer]
        ci = st.bootstrap(st.pairwise(sub["s"].tolist(), list(zip(sub["a"], sub["b"]))),
                          replicates=SETTINGS.replicates, seed=SETTINGS.seed)
        assert (row["lo"], row["hi"]) == pytest.approx((ci.lo, ci.hi))
        assert row["note"].startswith("over seeds (4 seeds)")


def test_too_large_layers_keep_no_input_replicates(nets):
    cfg = {**CFG, "max_block_bytes": 100, "permutations": 0}
    layer = rp.layer_replicates(nets, PAIRS, "conv1", cfg, log=None)
    assert layer.n_blocks == 0 and "max_block_bytes" in layer.block_note and not layer.permutation
    ci = iv.mean_interval({p: layer.value("matching", *p) for p in PAIRS}, SETTINGS, layer, "matching")
    assert ci.over == "seeds"


@pytest.mark.parametrize("min_rows_per_unit", [2, 1000])
def test_bootstrap_subspace_step_reproduces_the_subspace_rule_and_skips_undersampled_layers(
        nets, tmp_path, min_rows_per_unit):
    """The rules as Snakemake calls them: `subspace` writes s(eps) per pair, `bootstrap_subspace`
    stores replicates whose estimate is exactly that s(eps), or none where the layer is undersampled."""
    from types import SimpleNamespace

    from convergent.steps import bootstrap_subspace, subspace as subspace_step
    from convergent.subspace_results import read_pair_result

    pairs = [*PAIRS, *BASELINE]
    results = [tmp_path / f"{a}-{b}.h5" for a, b in pairs]
    sub = {"eps": list(SUBSPACE_EPS), **SUBSPACE_SAMPLE, "simple_eps": [], "restarts": 1,
           "min_rows_per_unit": min_rows_per_unit, "device": "cpu"}
    acts = SimpleNamespace(acts=list(nets.values()))
    subspace_step.main(acts, SimpleNamespace(h5=results),
                       SimpleNamespace(cfg=sub, layer="conv1", nets=list(nets), pairs=pairs, simple_pairs=[]), [])
    out = tmp_path / "replicates.h5"
    cfg = {k: CFG[k] for k in ("seed", "blocks", "max_block_bytes", "interval")} | {"subspace_replicates": 100}
    bootstrap_subspace.main(SimpleNamespace(acts=list(nets.values()), results=results), SimpleNamespace(replicates=out),
                            SimpleNamespace(cfg=cfg, subspace=sub, layer="conv1", nets=list(nets), pairs=PAIRS,
                                            baseline=BASELINE), [])
    stored = rp.LayerReplicates.load(out)
    assert stored.pairs == [rp.pair_name(a, b) for a, b in pairs] and stored.replicates == 100
    if min_rows_per_unit == 1000:  # 120 rows for 10 units: flagged by the subspace rule
        assert read_pair_result(results[0]).undersampled
        assert stored.measures == [] and "undersampled layer" in stored.block_note
        return
    for path, (a, b) in zip(results, pairs):
        r = read_pair_result(path)
        for k, eps in enumerate(SUBSPACE_EPS):
            assert stored.value(rp.subspace_measure(eps), a, b) == pytest.approx(r.similarity[:, k].mean(), abs=1e-12)

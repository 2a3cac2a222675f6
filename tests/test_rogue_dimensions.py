"""Rogue dimensions (convergent.rogue_dimensions) and standardised units in the whole-layer measures.

The criterion is checked against a per-unit reference written with the statistics module on the
raw rows; the effect of `similarity.standardize` on a planted rogue dimension: two networks share a
12-dimensional representation (each its own rotation and noise) and each has one extra unit of
huge variance, independent of the other network's. Linear CKA on raw units sees only that unit
(near 0); on standardised units it sees the shared representation, as linear CKA without the
rogue units does (a brute-force HSIC reference).
"""

import statistics
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import STATISTICS, Named
from convergent import network_similarity as pairs
from convergent import rogue_dimensions as rd
from convergent.correlation import joint_layer_statistics
from convergent.steps import figure_similarity_summary, table_rogue_dimensions

CFG = {"measures": ["linear_cka", "procrustes", "cca", "matching"], "svcca_variance": 0.99, "rbf_sigma": 0.8,
       "subspace_eps": 0.5, "max_rows": 10_000, "kernel_rows": 50, "permutations": 0, "seed": 0,
       "mutual_knn_k": 10, "standardize": False, "pooling": "mean", "rogue_variance_ratio": 10, "rogue_mean_z": 10}


def reference(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Variance ratio and robust |mean| z-score per column, one column at a time."""
    variances = [statistics.pvariance(col) for col in x.T.tolist()]
    typical = statistics.fmean(variances)
    sizes = [abs(statistics.fmean(col)) for col in x.T.tolist()]
    centre = statistics.median(sizes)
    mad = statistics.median([abs(s - centre) for s in sizes])
    return [v / typical for v in variances], [(s - centre) / (1.4826 * mad) for s in sizes]


def planted(rng, n=3000, units=40):
    scale, offset = np.ones(units), rng.normal(scale=0.3, size=units)
    offset[7] += 25.0  # a rogue mean (its variance is typical)
    scale[13] = 5.0  # a rogue variance (25 x; its mean is typical)
    return rng.normal(size=(n, units)) * scale + offset


def test_planted_rogue_units_are_found_and_the_statistics_match_a_per_unit_reference():
    x = planted(np.random.default_rng(0))
    s = rd.unit_statistics(x.mean(axis=0), x.std(axis=0))
    ratio, z = reference(x)
    np.testing.assert_allclose(s["variance_ratio"], ratio, rtol=1e-9)
    np.testing.assert_allclose(s["mean_z"], z, rtol=1e-9)
    norm = float(np.mean(np.sum(x ** 2, axis=1)))  # E|row|^2
    np.testing.assert_allclose(s["cosine_share"], x.mean(axis=0) ** 2 / norm, rtol=1e-9)
    assert np.flatnonzero(rd.rogue_mask(x.mean(axis=0), x.std(axis=0))).tolist() == [7, 13]


def test_an_isotropic_layer_has_no_rogue_units_and_a_dead_unit_is_not_one():
    x = np.random.default_rng(1).normal(size=(3000, 40))
    x[:, 3] = 50.0  # constant: dead, whatever its mean
    assert not rd.rogue_mask(x.mean(axis=0), x.std(axis=0)).any()


def test_table_lists_every_rogue_unit_and_each_networks_largest_unit():
    rng = np.random.default_rng(2)
    rogue, clean = planted(rng), rng.normal(size=(3000, 40))
    layers = {"hidden_states.1": (np.array([0, 1]), np.stack([rogue.mean(0), clean.mean(0)]),
                                  np.stack([rogue.std(0), clean.std(0)]))}
    table = rd.rogue_table(layers)
    seed0 = table[table["seed"] == 0]
    assert sorted(seed0.loc[seed0["rogue"], "unit"]) == [7, 13]
    assert seed0.set_index("unit").loc[7, "criterion"] == "mean"
    assert seed0.set_index("unit").loc[13, "criterion"] == "variance"
    seed1 = table[table["seed"] == 1]
    assert len(seed1) == 1 and not seed1["rogue"].any()
    assert seed1["unit"].iloc[0] == int(np.argmax(clean.var(axis=0)))
    assert rd.rogue_counts(table, ["hidden_states.1", "other"]) == {"hidden_states.1": 2, "other": 0}


def test_standardized_covariances_are_those_of_standardized_rows():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(500, 6)) * rng.uniform(0.1, 9, 6), rng.normal(size=(500, 4))
    x[:, 2] = 1.0  # a dead unit: zero rows and columns either way
    joint = np.cov(np.hstack([x, y]).T, bias=True)
    got = rd.standardize_covs(joint[:6, :6], joint[6:, 6:], joint[:6, 6:])
    want = np.cov(np.hstack([rd.standardize(x), rd.standardize(y)]).T, bias=True)
    for g, w in zip(got, (want[:6, :6], want[6:, 6:], want[:6, 6:])):
        np.testing.assert_allclose(g, w, atol=1e-12)


def hsic_cka(x, y):
    """Linear CKA from centred Gram matrices (Kornblith et al. 2019, eq. 2 with linear kernels)."""
    h = np.eye(len(x)) - 1.0 / len(x)
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


@pytest.fixture(scope="module")
def rogue_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("rogue")
    rng = np.random.default_rng(4)
    n, width = 600, 12
    shared = rng.normal(size=(n, width))
    nets = {}
    for seed in (0, 1):
        rotation = np.linalg.qr(rng.normal(size=(width, width)))[0]
        body = shared @ rotation + 0.3 * rng.normal(size=(n, width))
        rogue = 30.0 + 40.0 * rng.normal(size=(n, 1))  # its own: nothing shared with the other net
        nets[seed] = np.hstack([body, rogue])
        path = root / f"seed{seed}.h5"
        with h5py.File(path, "w") as h5:
            h5.attrs["layers"] = ["fc1"]
            h5.create_dataset("probe/image_index", data=np.arange(n))
            group = h5.create_group("layers/fc1")
            group.create_dataset("samples", data=nets[seed].astype(np.float32))
            group.attrs.update({"kind": "vector", "signed": True, "shape": (width + 1, 1, 1)})
    stats = root / "stats_fc1.h5"
    joint_layer_statistics([root / "seed0.h5", root / "seed1.h5"], [0, 1], "fc1").save(stats)
    return SimpleNamespace(root=root, nets=nets, stats=stats, width=width)


def compare(rogue_pair, standardize: bool, with_stats: bool) -> dict[str, float]:
    cfg = {**CFG, "standardize": standardize}
    frame = pairs.compare_pair(str(rogue_pair.root / "seed0.h5"), str(rogue_pair.root / "seed1.h5"), ["fc1"], cfg,
                               "trained", "seed0", "seed1", stats={"fc1": rogue_pair.stats} if with_stats else None,
                               seeds=(0, 1) if with_stats else None, log=lambda *_: None)
    same = frame[frame["scope"] == "same_layer"]
    return dict(zip(same["measure"], same["value"]))


@pytest.mark.parametrize("with_stats", [True, False], ids=["streamed covariances", "sampled rows"])
def test_a_rogue_dimension_dominates_linear_cka_unless_units_are_standardized(rogue_pair, with_stats):
    a, b = (rogue_pair.nets[s].astype(np.float32).astype(np.float64) for s in (0, 1))
    w = rogue_pair.width
    without_rogue = hsic_cka(a[:, :w], b[:, :w])
    only_rogue = hsic_cka(a[:, w:], b[:, w:])
    raw = compare(rogue_pair, False, with_stats)
    standardized = compare(rogue_pair, True, with_stats)
    assert without_rogue > 0.8 and only_rogue < 0.05
    # Raw units: linear CKA is the rogue units' (near 0), not the shared representation's.
    assert abs(raw["linear_cka"] - only_rogue) < 0.05
    # Standardised: one unit among 13 of equal variance; the shared 12 carry the value.
    assert standardized["linear_cka"] == pytest.approx(hsic_cka(rd.standardize(a), rd.standardize(b)), abs=1e-6)
    assert standardized["linear_cka"] > without_rogue - 0.15
    assert standardized["procrustes"] < raw["procrustes"] / 2  # a distance: raw near sqrt(2), unrelated
    # Invariant to scaling units: unchanged by standardising.
    for name in ("cca", "matching"):
        assert standardized[name] == pytest.approx(raw[name], abs=1e-6)


def test_rogue_table_step_and_the_flag_in_the_similarity_summary(rogue_pair, tmp_path):
    table_out = Named(csv=str(tmp_path / "rogue.csv"), md=str(tmp_path / "rogue.md"), tex=str(tmp_path / "rogue.tex"))
    table_rogue_dimensions.main(Named(stats=[str(rogue_pair.stats)]), table_out,
                                SimpleNamespace(cfg=CFG, layers=["fc1"]), [])
    table = pd.read_csv(table_out.csv)
    rogue = table[table["rogue"]]
    assert sorted(rogue["seed"]) == [0, 1] and set(rogue["unit"]) == {rogue_pair.width}
    pair_csv = tmp_path / "pair.csv"
    pairs.compare_pair(str(rogue_pair.root / "seed0.h5"), str(rogue_pair.root / "seed1.h5"), ["fc1"], CFG,
                       "trained", "seed0", "seed1", log=lambda *_: None).to_csv(pair_csv, index=False)
    outputs = Named([str(tmp_path / "summary.png")], csv=str(tmp_path / "s.csv"), md=str(tmp_path / "s.md"),
                    tex=str(tmp_path / "s.tex"))
    params = SimpleNamespace(cfg=CFG, layers=["fc1"], figures={"dpi": 50, "formats": ["png"]}, statistics=STATISTICS)
    figure_similarity_summary.main(Named(pairs=[str(pair_csv)], rogue=table_out.csv), outputs, params, [])
    summary = pd.read_csv(outputs.csv)
    assert (summary["rogue_units"] == 1).all()
    assert "raw units" in (tmp_path / "s.md").read_text() or "raw units" in (tmp_path / "s.tex").read_text()


class RawReplicates:
    """Stored replicates that must not be read: they are of raw units."""

    def __getattr__(self, name):
        raise AssertionError(f"replicates of raw units read ({name})")


def test_standardized_summaries_do_not_take_intervals_from_replicates_of_raw_units():
    from convergent.intervals import Settings

    frame = pd.DataFrame([("trained", f"seed{a}", f"seed{b}", "same_layer", "fc1", "fc1", "linear_cka", "none", -1, 100, v)
                          for (a, b), v in {(0, 1): 0.7, (0, 2): 0.75, (1, 2): 0.8}.items()], columns=pairs.COLUMNS)
    settings = Settings.from_config(STATISTICS)
    table = figure_similarity_summary.summarize(frame, ["fc1"], ["linear_cka"], settings, {"fc1": RawReplicates()},
                                                standardized=True)
    assert "similarity.standardize" in table["trained_vs_trained_note"].iloc[0]
    with pytest.raises(AssertionError, match="replicates of raw units read"):
        figure_similarity_summary.summarize(frame, ["fc1"], ["linear_cka"], settings, {"fc1": RawReplicates()})

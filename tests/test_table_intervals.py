"""Interval columns of the tables that had none (issue 12): accuracy, the MI and cluster tables
(their `mean` rows), sparse-map Table 2, the cross-layer summary, LMC barriers and stitching
penalties. Each interval is checked against the multi-bootstrap of the values it should be made
from (the right pairs, networks and range), to lie in the quantity's range, and, with one pair,
to be absent with a note saying so."""

import itertools
import json
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from conftest import STATISTICS, Named  # noqa: E402
from convergent import intervals as iv  # noqa: E402
from convergent import statistics as st  # noqa: E402
from convergent.connectivity import barrier_table  # noqa: E402
from convergent.steps import (figure_functional_lmc, figure_functional_stitching,  # noqa: E402
                              figure_similarity_cross_layer, table_accuracy, table_li2016_table2)

SETTINGS = iv.Settings.from_config(STATISTICS)
SEEDS = [0, 1, 2, 3]
PAIRS = list(itertools.combinations(SEEDS, 2))


def reference(values, pairs, range_, groups=None):
    """The interval a mean over pairs should get, built from the library's parts directly."""
    stat = st.pairwise(list(values), list(pairs), groups=groups, bounds=range_)
    return st.bootstrap(stat, replicates=SETTINGS.replicates, seed=SETTINGS.seed, level=SETTINGS.level)


def test_accuracy_mean_over_trained_seeds(tmp_path):
    rng = np.random.default_rng(0)
    accuracy = 0.995 + 0.004 * rng.random(len(SEEDS))  # near 1: the range matters
    paths = []
    for seed, acc in zip([*SEEDS, 100], [*accuracy, 0.1]):
        paths.append(tmp_path / f"m{seed}.json")
        paths[-1].write_text(json.dumps({"seed": seed, "architecture": "small_cnn", "dataset": "mnist5k",
                                         "epochs": 1, "heldout_accuracy": float(acc), "seconds": 1.0,
                                         "trained": seed != 100}))
    out = Named(csv=str(tmp_path / "acc.csv"), md=str(tmp_path / "acc.md"), tex=str(tmp_path / "acc.tex"))
    table_accuracy.main(Named(metrics=[str(p) for p in paths]), out, SimpleNamespace(statistics=STATISTICS), [])
    table = pd.read_csv(out.csv)
    mean = table[table["network"].str.startswith("mean")].iloc[0]
    expected = st.bootstrap(st.per_net(list(accuracy), [f"seed {s}" for s in SEEDS], bounds=(0.0, 1.0)),
                            replicates=SETTINGS.replicates, seed=SETTINGS.seed)
    assert (mean["lo"], mean["hi"]) == pytest.approx((expected.lo, expected.hi))
    assert 0 <= mean["lo"] <= mean["heldout_accuracy"] <= mean["hi"] <= 1
    assert mean["note"].startswith("over seeds (4 seeds)") and "held-out images fixed" in mean["note"]
    assert table.loc[~table["network"].str.startswith("mean"), "lo"].isna().all()
    assert "| note" not in open(out.md).read().splitlines()[0]


def test_summary_rows_over_pairs_and_with_one_pair():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"layer": ["conv1"] * len(PAIRS) + ["conv2"],
                          "pair": [f"{a}-{b}" for a, b in PAIRS] + ["0-1"],
                          "semi_same": list(rng.random(len(PAIRS))) + [0.5]})
    rows = iv.summary_rows(frame, ["layer"], {"semi_same": "fraction"}, SETTINGS, fixed="inputs fixed")
    conv1, conv2 = rows.iloc[0], rows.iloc[1]
    ci = reference(frame["semi_same"][:len(PAIRS)], [(str(a), str(b)) for a, b in PAIRS], (0.0, 1.0))
    assert conv1["pair"] == "mean" and conv1["semi_same"] == pytest.approx(frame["semi_same"][:len(PAIRS)].mean())
    assert (conv1["semi_same_lo"], conv1["semi_same_hi"]) == pytest.approx((ci.lo, ci.hi))
    assert np.isnan(conv2["semi_same_lo"]) and "one seed pair" in conv2["note"] and "no interval" in conv2["note"]


def _sparse_frames(pairs, rng):
    frames = []
    for a, b in pairs:
        for layer in ("conv1", "conv2"):
            frames.append(pd.DataFrame({"a": a, "b": b, "layer": layer, "decay": [0.0, 1e-3],
                                        "loss": 0.02 * rng.random(2), "nonzero": [10.0, 3.0],
                                        "nonzero_001": [9.0, 2.0]}))
    return frames


def test_sparse_map_loss_intervals_per_layer_and_decay():
    rng = np.random.default_rng(2)
    frames = _sparse_frames(PAIRS, rng)
    table = table_li2016_table2.table2(frames, ["conv1", "conv2"], SETTINGS)
    data = pd.concat(frames)
    for i, decay in enumerate([0.0, 1e-3]):
        sel = data[(data.layer == "conv2") & (data.decay == decay)]
        ci = reference(sel["loss"], [(str(a), str(b)) for a, b in zip(sel.a, sel.b)], (0.0, np.inf))
        assert (table["conv2 loss lo"][i], table["conv2 loss hi"][i]) == pytest.approx((ci.lo, ci.hi))
        assert 0 <= table["conv2 loss lo"][i] <= table["conv2 loss"][i] <= table["conv2 loss hi"][i]
    assert table["note"].str.startswith("over seeds (4 seeds)").all()
    one = table_li2016_table2.table2(_sparse_frames(PAIRS[:1], rng), ["conv1", "conv2"], SETTINGS)
    assert one["conv1 loss lo"].isna().all() and one["note"].str.contains("one seed pair").all()


def _cross_frame(rng):
    rows = []
    layers = ["conv1", "conv2", "fc1"]
    nets = [(f"seed{a}", f"seed{b}", "trained") for a, b in PAIRS] + [(f"seed{s}", "untrained9", "untrained")
                                                                       for s in SEEDS]
    for a, b, kind in nets:
        for la, lb in itertools.product(layers, layers):
            value = (0.9 if kind == "trained" else 0.3) * (1.0 if la == lb else 0.4) + 0.05 * rng.random()
            rows.append({"kind": kind, "net_a": a, "net_b": b, "scope": "cross_layer", "layer_a": la,
                         "layer_b": lb, "measure": "linear_cka", "null": "none", "permutation": -1,
                         "n_rows": 10, "value": min(value, 1.0)})
    return pd.DataFrame(rows), layers


def test_cross_layer_diagonal_and_off_diagonal_intervals(tmp_path):
    frame, layers = _cross_frame(np.random.default_rng(3))
    path = tmp_path / "pairs.csv"
    frame.to_csv(path, index=False)
    pngs = [str(tmp_path / "similarity_cross_layer_linear_cka.png")]
    out = Named(pngs, csv=str(tmp_path / "c.csv"), md=str(tmp_path / "c.md"), tex=str(tmp_path / "c.tex"))
    params = SimpleNamespace(cfg={"measures": ["linear_cka"]}, layers=layers, figures={"dpi": 40},
                             statistics=STATISTICS)
    figure_similarity_cross_layer.main(Named(pairs=[str(path)]), out, params, [])
    table = pd.read_csv(out.csv).set_index("kind")
    sub = frame[frame["layer_a"] == frame["layer_b"]]
    for kind in ("trained", "untrained"):
        per_pair = sub[sub["kind"] == kind].groupby(["net_a", "net_b"], sort=False)["value"].mean()
        groups = ({"trained": tuple(f"seed{s}" for s in SEEDS), "untrained": ("untrained9",)}
                  if kind == "untrained" else None)
        ci = reference(per_pair.to_numpy(), list(per_pair.index), (0.0, 1.0), groups)
        row = table.loc[kind]
        assert (row["diagonal_lo"], row["diagonal_hi"]) == pytest.approx((ci.lo, ci.hi))
        assert row["diagonal_mean"] == pytest.approx(per_pair.mean())
        assert 0 <= row["off_diagonal_lo"] <= row["off_diagonal_mean"] <= row["off_diagonal_hi"] <= 1
    assert table.loc["trained", "diagonal_lo"] > table.loc["trained", "off_diagonal_hi"]


def _curves(pairs, rng):
    rows = []
    for a, b in pairs:
        for alignment in ("none", "weight"):
            height = (0.8 if alignment == "none" else 0.1) + 0.05 * rng.random()
            for alpha in np.linspace(0, 1, 5):
                rows.append({"a": a, "b": b, "alignment": alignment, "alpha": alpha,
                             "loss": 0.1 + height * np.sin(np.pi * alpha), "accuracy": 0.98 - height * np.sin(np.pi * alpha) / 2,
                             "bn_reset": False})
    return pd.DataFrame(rows)


def test_lmc_barrier_intervals_on_the_mean_rows():
    curves = _curves(PAIRS, np.random.default_rng(4))
    table = figure_functional_lmc.with_intervals(barrier_table(curves), SETTINGS)
    per_pair = table[~table["pair"].isin(["mean", "std"])]
    for alignment in ("none", "weight"):
        rows = per_pair[per_pair["alignment"] == alignment]
        mean = table[(table["pair"] == "mean") & (table["alignment"] == alignment)].iloc[0]
        ci = reference(rows["loss_barrier"], [iv.split_pair(p) for p in rows["pair"]], (0.0, np.inf))
        assert (mean["loss_barrier_lo"], mean["loss_barrier_hi"]) == pytest.approx((ci.lo, ci.hi))
        assert 0 <= mean["accuracy_barrier_lo"] <= mean["accuracy_barrier"] <= mean["accuracy_barrier_hi"] <= 1
    assert per_pair["loss_barrier_lo"].isna().all()
    one = figure_functional_lmc.with_intervals(barrier_table(_curves(PAIRS[:1], np.random.default_rng(5))), SETTINGS)
    assert one["loss_barrier_lo"].isna().all()
    assert one.loc[one["pair"] == "mean", "note"].str.contains("one seed pair").all()


def test_stitching_penalty_intervals(tmp_path):
    rng = np.random.default_rng(6)
    rows = [{"a": a, "b": b, "layer": layer, "stitch": stitch, "penalty": 0.01 + 0.02 * rng.random(),
             "accuracy": 0.95, "accuracy_b": 0.97, "info_nonzero_per_unit": 2.0}
            for a, b in PAIRS for layer in ("conv1", "conv2") for stitch in ("trained", "permutation")]
    frame = pd.DataFrame(rows)
    path = tmp_path / "stitch.csv"
    frame.to_csv(path, index=False)
    out = Named([str(tmp_path / "functional_stitching.png")], csv=str(tmp_path / "s.csv"),
                md=str(tmp_path / "s.md"), tex=str(tmp_path / "s.tex"))
    params = SimpleNamespace(layers=["conv1", "conv2"], figures={"dpi": 40}, statistics=STATISTICS)
    figure_functional_stitching.main(Named(pairs=[str(path)]), out, params, [])
    table = pd.read_csv(out.csv)
    row = table[(table["layer"] == "conv2") & (table["stitch"] == "permutation")].iloc[0]
    sel = frame[(frame["layer"] == "conv2") & (frame["stitch"] == "permutation")]
    ci = reference(sel["penalty"], [(str(a), str(b)) for a, b in zip(sel.a, sel.b)], (-1.0, 1.0))
    assert (row["penalty_lo"], row["penalty_hi"]) == pytest.approx((ci.lo, ci.hi))
    assert row["note"].startswith("over seeds (4 seeds)")

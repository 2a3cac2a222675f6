"""The Wang et al. 2018 steps (rule `subspace` and its figures and table) on small activation
files with planted shared subspaces, called directly as the rules call them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import STATISTICS, tiny_config, tiny_layers
from convergent.steps import (
    figure_wang2018_fig1,
    figure_wang2018_fig2,
    figure_wang2018_sample_size,
    subspace as subspace_step,
    subspace_sample_size,
    table_wang2018_similarity,
)
from convergent.subspace_layers import compare_layer
from convergent.subspace_results import read_pair_result
from convergent.subspace_testing import planted_pair

CFG = {
    "eps": [0.15, 0.25, 0.5],
    "sample_size": 300,
    "repeats": 3,
    "sample_seed": 0,
    "simple_eps": None,
    "restarts": 2,
    "min_rows_per_unit": 8,
    "baseline": "all",
    "device": "cpu",
    "sample_size_study": {"layer": None, "multiples": [1, 2, 10], "sizes": [500],
                          "all_rows": True},
}
LAYERS = ["conv1", "fc1"]


def write_activations(path, layers):
    with h5py.File(path, "w") as h5:
        h5.attrs["layers"] = [name for name, _, _ in layers]
        for name, kind, Z in layers:
            g = h5.create_group(f"layers/{name}")
            g["samples"] = Z.astype(np.float32)
            g.attrs["kind"] = kind
            g.attrs["shape"] = (Z.shape[1], 1, 1)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """Three 'trained' nets sharing planted subspaces, one 'untrained' net that shares none;
    conv1 has 900 rows (sampled), fc1 200 (all used). conv1 has a dead unit in seed0."""
    root = tmp_path_factory.mktemp("acts")
    rng = np.random.default_rng(0)
    conv = planted_pair(900, [1, 2, 3], private_x=2, private_y=2, noise=0.02, seed=1)[:2]
    fc = planted_pair(200, [2, 2, 4], private_x=3, private_y=3, noise=0.02, seed=2)[:2]
    paths = {}
    for k, net in enumerate(["seed0", "seed1", "seed2", "untrained100"]):
        if net.startswith("untrained"):
            c, f = rng.standard_normal((900, 8)), rng.standard_normal((200, 11))
        else:  # every trained net is a re-mixing of the same two planted nets
            c = (conv[k % 2] @ np.linalg.qr(rng.standard_normal((8, 8)))[0]) if k == 2 else conv[k % 2]
            f = fc[k % 2]
        if net == "seed0":
            c = c.copy()
            c[:, 3] = 0.0
        paths[net] = root / f"{net}.h5"
        write_activations(paths[net], [("conv1", "conv", c), ("fc1", "fc", f)])
    return paths


@pytest.fixture(scope="module")
def results(nets, tmp_path_factory):
    out = tmp_path_factory.mktemp("subspace")
    pairs = [("seed0", "seed1"), ("seed0", "seed2"), ("seed1", "seed2"),
             ("seed0", "untrained100"), ("seed1", "untrained100"), ("seed2", "untrained100")]
    files = {}
    for layer in LAYERS:
        h5 = [out / layer / f"{a[4:]}-{b if b.startswith('untrained') else b[4:]}.h5"
              for a, b in pairs]
        subspace_step.main(SimpleNamespace(acts=list(nets.values())),
                           SimpleNamespace(h5=h5),
                           SimpleNamespace(cfg=CFG, layer=layer, nets=list(nets), pairs=pairs,
                                           simple_pairs=pairs[:3]),
                           [])
        files[layer] = h5
    return files


def test_subspace_step_writes_what_the_library_computes(nets, results):
    r = read_pair_result(results["conv1"][0])
    assert (r.layer, r.a, r.b, r.kind) == ("conv1", "seed0", "seed1", "conv")
    assert r.similarity.shape == (3, 3) and r.sample_size == 300 and r.n_rows == 900
    assert list(r.dropped_x) == [1, 1, 1] and list(r.dropped_y) == [0, 0, 0]
    assert not r.match_x[:, :, 3].any()
    with h5py.File(nets["seed0"]) as a, h5py.File(nets["seed1"]) as b:
        X, Y = a["layers/conv1/samples"][()], b["layers/conv1/samples"][()]
    again = compare_layer(X.astype(float), Y.astype(float), layer="conv1", eps_grid=CFG["eps"],
                          sample_size=300, repeats=3, seed=0, simple_eps=CFG["eps"],
                          restarts=2, device="cpu")
    assert np.array_equal(again.similarity, r.similarity)
    assert all(np.array_equal(again.simple[e][0], r.simple[e][0]) for e in r.simple)
    # rows are the same draws for every pair, so s differs between repeats but not by pair
    assert r.similarity.std(0).max() < 0.2
    fc = read_pair_result(results["fc1"][0])
    assert fc.repeats == 1 and fc.sample_size == 200  # fc layers use every probe image
    # planted blocks of sizes 2, 2, 4 (noise 0.02) are the simple matches at every ε
    assert sorted(fc.simple_sizes(0.25)) == [4, 4, 8]
    assert fc.similarity[0, 1] == pytest.approx(16 / 22)
    base = read_pair_result(results["fc1"][3])
    assert base.simple == {} and base.b == "untrained100"


def test_figures_and_table(results, tmp_path):
    pairs = [p for layer in LAYERS for p in results[layer][:3]]
    baseline = [p for layer in LAYERS for p in results[layer][3:]]
    params = SimpleNamespace(layers=LAYERS, figures={"dpi": 60}, statistics=STATISTICS)
    stem = tmp_path / "tables" / "wang2018_similarity"
    table_wang2018_similarity.main(
        SimpleNamespace(pairs=pairs, baseline=baseline, replicates=[]),
        SimpleNamespace(csv=f"{stem}.csv", md=f"{stem}.md", tex=f"{stem}.tex"), params, [])
    table = pd.read_csv(f"{stem}.csv")
    assert list(table["layer"].unique()) == LAYERS and len(table) == 2 * len(CFG["eps"])
    fc = table[table["layer"] == "fc1"].set_index("eps")
    assert (fc["pairs"] == 3).all() and (fc["baseline_pairs"] == 3).all()
    assert (fc["baseline_mean"] < fc["s_mean"]).all()
    assert Path(f"{stem}.md").read_text().count("conv1") == len(CFG["eps"])
    for step, inputs, name in (
            (figure_wang2018_fig1, SimpleNamespace(pairs=pairs, baseline=baseline, replicates=[]), "fig1"),
            (figure_wang2018_fig2, SimpleNamespace(pairs=pairs), "fig2")):
        out = [tmp_path / f"wang2018_{name}.pdf", tmp_path / f"wang2018_{name}.png"]
        step.main(inputs, out, params, [])
        assert all(p.stat().st_size > 1000 for p in out)


def test_sample_size_study(nets, tmp_path):
    csv = tmp_path / "conv1.csv"
    subspace_sample_size.main(SimpleNamespace(a=nets["seed0"], b=nets["seed1"]),
                              SimpleNamespace(csv=csv),
                              SimpleNamespace(cfg=CFG, layer="conv1", pair=(0, 1)), [])
    frame = pd.read_csv(csv)
    assert sorted(frame["d"].unique()) == [8, 16, 80, 500, 900]
    assert (frame[frame["d"] == 900]["repeats"] == 1).all()
    small = frame[frame["d"] == 8].set_index("eps")["mean"]
    large = frame[frame["d"] == 900].set_index("eps")["mean"]
    # d = units: spans fill the sample space, so more matches than with all rows
    assert (small >= large).all() and (small > large + 0.3).any()
    out = [tmp_path / "s.png"]
    figure_wang2018_sample_size.main(SimpleNamespace(csv=csv), out,
                                     SimpleNamespace(figures={"dpi": 60}), [])
    assert out[0].stat().st_size > 1000


@pytest.mark.workflow
def test_tiny_run_has_the_wang2018_outputs(tiny_run):
    """The shared tiny run built every Wang output, readable, with one row per layer and ε."""
    out = tiny_run / "results" / "tiny"
    for stem in ("wang2018_fig1", "wang2018_fig2", "wang2018_sample_size"):
        assert list((out / "figures").glob(f"{stem}.*")), stem
    table = pd.read_csv(out / "tables" / "wang2018_similarity.csv")
    assert table["s_mean"].between(0, 1).all() and table["layer"].nunique() >= 2
    assert "baseline_mean" in table
    # statistics.subspace_replicates (default 200): the bootstrap_subspace rule's replicates make every
    # interval one over seeds and probe inputs
    from convergent.intervals import SUBSPACE_INPUTS

    assert sorted(p.stem for p in (out / "statistics" / "subspace").glob("*.h5")) == sorted(tiny_layers())
    few = table["undersampled"].astype(bool)
    varied = table[(table["hi"] > table["lo"]) & ~few]
    assert len(varied) and varied["note"].str.startswith("over seeds and inputs").all(), varied["note"].tolist()
    assert varied["note"].str.contains(SUBSPACE_INPUTS, regex=False).all()
    # undersampled layers are not resampled over inputs (duplicated inputs lower the rank)
    assert not table.loc[few, "note"].str.contains("input blocks").any()
    assert table["interval"].str.contains(f"{tiny_config()['statistics'].get('subspace_replicates', 200)} replicates").all()

"""Step scripts of the many-to-many stage (Li §4: sparse mappings, spectral clustering), called
directly on a small synthetic experiment, plus their part of the tiny workflow run.

Both nets' units are noisy ReLU mixtures of four shared groups (of different sizes in each net),
so the clustering must recover the groups; net 1 also has a dead unit, which must be listed
and left out.
"""

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from conftest import STATISTICS, Named, copy_run, planned_jobs, tiny_config, tiny_layers, write_config, write_conv_activations  # noqa: E402
from convergent.clustering import read_clusters_json  # noqa: E402
from convergent.correlation import joint_layer_statistics  # noqa: E402
from convergent.sparse_mapping import decay_grid  # noqa: E402
from convergent.steps import (  # noqa: E402
    cluster,
    figure_li2016_cluster_units,
    figure_li2016_clusters,
    figure_li2016_sparsity,
    sparse_map,
    table_li2016_clusters,
    table_li2016_table2,
)

IMAGES, PER_IMAGE, SIDE, OUT_SIDE = 60, 10, 12, 6
RF = (3, 2, -1)
GROUPS_A = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3]  # planted group of each unit of net 0
GROUPS_B = [1, 1, 1, 0, 0, 3, 3, 2, 2, 2, 3, 0]  # net 1: same groups, other sizes and order
DEAD_B = 10  # unit of net 1 that never fires
SPARSE_CFG = {"decays": [0, 1e-5, 1e-4, 1e-2, 1e-1], "fine_grid": {"start": -3.8, "stop": -2.2, "step": 0.4},
              "decay_scale": "n_targets", "validation_fraction": 0.25, "split_seed": 0, "tol": 1e-8,
              "max_iter": 10000, "chunk_rows": 128}  # small chunks: the moments are streamed
CLUSTER_CFG = {"tau": 0.2, "k": 4, "k_max": None, "alpha": 0.2, "split_k": 2, "n_init": 10, "seed": 0}
FIGURE_CFG = {"patches": 4, "fig5_clusters": 3, "fig12_clusters": 4, "fig6_max_leaves": 8, "max_units_shown": 3}
FIGURES = {"dpi": 60, "formats": ["png"]}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("many_to_many")
    rng = np.random.default_rng(0)
    n = IMAGES * PER_IMAGE
    positions = np.stack([np.repeat(np.arange(IMAGES), PER_IMAGE), rng.integers(0, OUT_SIDE, n),
                          rng.integers(0, OUT_SIDE, n)], axis=1)
    latent = rng.normal(size=(n, 4))

    def net(groups):
        mix = rng.uniform(0.7, 1.0, len(groups))
        return np.maximum(latent[:, groups] * mix + 0.5 * rng.normal(size=(n, len(groups))), 0)

    net0, net1 = net(GROUPS_A), net(GROUPS_B)
    net1[:, DEAD_B] = 0.0
    paths = [root / "seed0.h5", root / "seed1.h5"]
    for seed, (path, samples) in enumerate(zip(paths, (net0, net1))):
        write_conv_activations(path, seed, samples, positions, np.arange(IMAGES), OUT_SIDE, RF)
    stats = root / "stats" / "conv1.h5"
    joint_layer_statistics(paths, [0, 1], "conv1").save(stats)
    images = rng.integers(0, 256, size=(IMAGES, SIDE, SIDE, 1), dtype=np.uint8)
    sparse_csv = root / "sparse" / "conv1" / "0-1.csv"
    sparse_map.main(Named(a=paths[0], b=paths[1]), Named(csv=sparse_csv),
                    SimpleNamespace(cfg=SPARSE_CFG, layer="conv1", pair=(0, 1)), [])
    clusters = root / "clusters" / "conv1" / "0-1.json"
    cluster.main(Named(stats=stats), Named(json=clusters), SimpleNamespace(cfg=CLUSTER_CFG, pair=(0, 1)), [])
    return SimpleNamespace(root=root, paths=paths, stats=stats, images=images, sparse=sparse_csv,
                           clusters=clusters, net0=net0, net1=net1)


def test_sparse_map_step_writes_the_decay_grid(experiment):
    table = pd.read_csv(experiment.sparse)
    fine = SPARSE_CFG["fine_grid"]
    assert table.decay.tolist() == pytest.approx(
        decay_grid(SPARSE_CFG["decays"], (fine["start"], fine["stop"], fine["step"])))
    assert (table.layer == "conv1").all() and (table.a == 0).all() and (table.b == 1).all()
    assert table.converged.all()
    assert table.n_dead_targets.iloc[0] == 1 and table.n_dead_sources.iloc[0] == 0
    # whole images go to one side of the split
    assert table.n_train.iloc[0] + table.n_val.iloc[0] == IMAGES * PER_IMAGE
    assert table.n_val.iloc[0] % PER_IMAGE == 0 and table.n_val.iloc[0] == 0.25 * IMAGES * PER_IMAGE
    assert table.nonzero.iloc[0] == len(GROUPS_A)  # no penalty: every unit of net 0 is used
    assert table.nonzero.iloc[-1] == 0 and table.loss.iloc[-1] > table.loss.iloc[0]
    assert np.all(np.diff(table.train_loss) >= -1e-9)


def test_sparse_map_step_uses_the_sources_of_each_unit(experiment):
    """At a moderate decay a unit of net 1 uses a few units of net 0, not all of them."""
    table = pd.read_csv(experiment.sparse)
    assert 0 < table.nonzero[table.decay == 1e-2].iloc[0] < len(GROUPS_A) / 2


def test_cluster_step_recovers_groups_and_leaves_the_dead_unit_out(experiment):
    doc = read_clusters_json(experiment.clusters)
    S = len(GROUPS_A)
    assert (doc["layer"], doc["a"], doc["b"], doc["k"], doc["units"]) == ("conv1", 0, 1, 4, S)
    assert doc["dead_a"] == [] and doc["dead_b"] == [DEAD_B]
    assert doc["labels"][S + DEAD_B] == -1 and doc["leaf_labels"][S + DEAD_B] == -1
    truth = np.array(GROUPS_A + GROUPS_B)
    live = doc["labels"] >= 0
    assert adjusted_rand_score(truth[live], doc["labels"][live]) >= 0.9
    assert doc["summary"]["flat"]["n_both"] == 4
    assert len(doc["eigenvalues"]) > doc["k"]
    max_leaf = 2 * CLUSTER_CFG["alpha"] * S
    assert all(len(leaf.units) <= max_leaf or len(leaf.units) == 1 for leaf in doc["tree"].leaves())


def test_tables(experiment, tmp_path):
    out = Named(csv=tmp_path / "t2.csv", md=tmp_path / "t2.md", tex=tmp_path / "t2.tex")
    table_li2016_table2.main(Named(csv=[experiment.sparse]), out, SimpleNamespace(layers=["conv1"]), [])
    t2, raw = pd.read_csv(out.csv), pd.read_csv(experiment.sparse)
    assert t2["conv1 loss"].tolist() == pytest.approx(raw.loss.tolist())
    assert t2["conv1 non-zero"].tolist() == pytest.approx(raw.nonzero.tolist())
    assert t2["conv1 |w|>0.01"].tolist() == pytest.approx(raw.nonzero_001.tolist())
    assert t2.decay.astype(float).tolist() == pytest.approx(raw.decay.tolist(), rel=1e-2)
    assert "conv1 loss" in out.md.read_text() and "\\begin{tabular}" in out.tex.read_text()
    out = Named(csv=tmp_path / "c.csv", md=tmp_path / "c.md", tex=tmp_path / "c.tex")
    table_li2016_clusters.main(Named(json=[experiment.clusters]), out, SimpleNamespace(statistics=STATISTICS), [])
    clusters = pd.read_csv(out.csv)
    row = clusters.iloc[0]
    mean = clusters.iloc[1]  # one pair: its mean row has the same values and says no interval is possible
    assert mean["pair"] == "mean" and mean["clusters between-net sim"] == pytest.approx(row["clusters between-net sim"])
    assert np.isnan(mean["clusters between-net sim lo"]) and "one seed pair" in mean["note"]
    assert (row["layer"], row["pair"], row["k"], row["clusters"], row["clusters with both"]) == \
        ("conv1", "0-1", 4, 4, 4)
    assert row["dead"] == 1
    assert row["clusters mean size a"] == pytest.approx(len(GROUPS_A) / 4)
    assert row["clusters mean size b"] == pytest.approx((len(GROUPS_B) - 1) / 4)


def assert_readable_png(path):
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0.02  # not a blank canvas


def test_figure_steps_write_readable_pngs(experiment, tmp_path, monkeypatch):
    figure_li2016_sparsity.main(Named(csv=[experiment.sparse]), Named([tmp_path / "li2016_sparsity_conv1.png"]),
                                SimpleNamespace(layers=["conv1"], figures=FIGURES), [])
    names = [f"li2016_{n}_conv1" for n in ("fig13", "fig14", "eigenvalues")]
    figure_li2016_clusters.main(Named(json=[experiment.clusters], stats=[experiment.stats]),
                                Named([tmp_path / f"{n}.png" for n in names]), SimpleNamespace(figures=FIGURES), [])
    monkeypatch.setattr(figure_li2016_cluster_units, "load_probe_images",
                        lambda cfg, index: experiment.images[index])
    units = [f"li2016_{n}_conv1" for n in ("fig5", "fig12", "fig6")]
    figure_li2016_cluster_units.main(
        Named(json=[experiment.clusters], act_a=experiment.paths[0], act_b=experiment.paths[1]),
        Named([tmp_path / f"{n}.{ext}" for n in units for ext in ("png", "pdf")]),
        SimpleNamespace(cfg=FIGURE_CFG, dataset={}, figures=FIGURES), [])
    for name in ["li2016_sparsity_conv1", *names, *units]:
        assert_readable_png(tmp_path / f"{name}.png")
    assert (tmp_path / "li2016_fig5_conv1.pdf").stat().st_size > 1000


def test_fig13_permutation_groups_clusters(experiment):
    doc = read_clusters_json(experiment.clusters)
    order, top_sizes, leaf_sizes = figure_li2016_clusters.cluster_permutation(doc)
    S = len(GROUPS_A)
    assert sorted(order.tolist()) == list(range(2 * S)) and order[-1] == S + DEAD_B
    assert sum(top_sizes) == sum(leaf_sizes) == 2 * S - 1
    labels = doc["labels"][order[:-1]]
    starts = np.cumsum([0, *top_sizes[:-1]])
    for start, size in zip(starts, top_sizes):  # each first-level cluster is one contiguous block
        assert len(set(labels[start:start + size])) == 1


def test_unit_mosaic_tiles_the_strongest_patches(experiment):
    from convergent.activations import read_top_activations
    from convergent.patches import cut_patches

    top = read_top_activations(experiment.paths[0], "conv1")
    mosaic = figure_li2016_cluster_units.unit_mosaic(experiment.images, top[2], {"receptive_field": RF}, 4)
    patches = cut_patches(experiment.images, top[2][:4], *RF)
    assert mosaic.shape == (2 * 3 + 1, 2 * 3 + 1, 1)
    np.testing.assert_array_equal(mosaic[:3, :3], patches[0])
    np.testing.assert_array_equal(mosaic[4:, 4:], patches[3])


@pytest.mark.workflow
def test_tiny_run_has_table2_and_cluster_figures(tiny_run):
    out = tiny_run / "results" / "tiny"
    t2 = pd.read_csv(out / "tables" / "li2016_table2.csv")
    layers = [c[: -len(" loss")] for c in t2.columns if c.endswith(" loss")]
    assert layers == tiny_layers()
    for layer in layers:
        nonzero = t2[f"{layer} non-zero"].to_numpy()
        assert nonzero[-1] < nonzero[0]
        for name in ("sparsity", "fig5", "fig6", "fig12", "fig13", "fig14", "eigenvalues"):
            assert_readable_png(out / "figures" / f"li2016_{name}_{layer}.png")
        assert read_clusters_json(out / "clusters" / layer / "0-1.json")["layer"] == layer
    clusters = pd.read_csv(out / "tables" / "li2016_clusters.csv")  # each layer's pair rows, then its mean row
    assert list(dict.fromkeys(clusters["layer"])) == tiny_layers() and (clusters["pair"] == "mean").sum() == len(layers)


@pytest.mark.workflow
def test_figure_only_setting_does_not_recluster(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    config = tiny_config()
    config["cluster"] = {"fig5_clusters": 3}
    jobs = planned_jobs(run, write_config(run, config))
    assert jobs.get("figure_li2016_cluster_units") == 1
    assert "cluster" not in jobs and "sparse_map" not in jobs and "figure_li2016_clusters" not in jobs

"""Step scripts of the similarity stage, called directly on a small synthetic experiment.

Each net has a conv layer (several positions per image) and an fc layer (one row per image). The
trained nets share each layer's latent factors (each net rotates them and adds its own noise);
the layers' factors are independent of each other, so the cross-layer maps must peak on the
diagonal. The "untrained" net has independent factors: its similarity sits at chance.
"""

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import h5py  # noqa: E402
import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from conftest import STATISTICS, Named, image_means  # noqa: E402
from convergent import network_similarity as pairs  # noqa: E402
from convergent import similarity as sim  # noqa: E402
from convergent.correlation import joint_layer_statistics  # noqa: E402
from convergent.steps import figure_similarity_cross_layer, figure_similarity_summary  # noqa: E402
from convergent.steps import similarity as step  # noqa: E402

IMAGES, PER_IMAGE, CONV, FC = 60, 5, 6, 5
LAYERS = ["conv1", "fc1"]
CFG = {"measures": sorted(sim.MEASURES), "svcca_variance": 0.99, "rbf_sigma": 0.8, "subspace_eps": 0.5,
       "max_rows": 10_000, "kernel_rows": 50, "permutations": 2, "seed": 0, "mutual_knn_k": 10,
       "standardize": False, "pooling": "mean", "rogue_variance_ratio": 10, "rogue_mean_z": 10}
FIGURES = {"dpi": 50, "formats": ["png"]}


def _write(path, layers):
    positions = np.stack([np.repeat(np.arange(IMAGES), PER_IMAGE), np.tile(np.arange(PER_IMAGE), IMAGES),
                          np.zeros(IMAGES * PER_IMAGE, dtype=int)], axis=1)
    with h5py.File(path, "w") as h5:
        h5.attrs["layers"] = LAYERS
        h5.create_dataset("probe/image_index", data=np.arange(IMAGES))
        for name, samples in zip(LAYERS, layers):
            group = h5.create_group(f"layers/{name}")
            group.create_dataset("samples", data=samples.astype(np.float32))
            if name == "conv1":
                group.create_dataset("positions", data=positions)
                # every position of the map is sampled, so its mean is the mean over the rows
                group.create_dataset("input_mean", data=image_means(samples, positions[:, 0], IMAGES))
                group.attrs.update({"kind": "spatial", "signed": False, "shape": (CONV, PER_IMAGE, 1)})
            else:
                group.attrs.update({"kind": "vector", "signed": False, "shape": (FC, 1, 1)})


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("similarity")
    rng = np.random.default_rng(0)
    # Conv factors: a per-image part (what an image-level row keeps) plus a per-position part.
    def conv_factors():
        return np.repeat(rng.normal(size=(IMAGES, CONV)), PER_IMAGE, axis=0) + 0.5 * rng.normal(
            size=(IMAGES * PER_IMAGE, CONV))

    shared = [conv_factors(), rng.normal(size=(IMAGES, FC))]

    def net(factors, noise):
        # A random rotation of the shared factors: what CKA treats as the same representation.
        rotations = [np.linalg.qr(rng.normal(size=(f.shape[1], f.shape[1])))[0] for f in factors]
        return [np.maximum(f @ r + noise * rng.normal(size=f.shape), 0) for f, r in zip(factors, rotations)]

    paths = {}
    for name, factors, noise in [("seed0", shared, 0.2), ("seed1", shared, 0.2), ("seed2", shared, 0.2),
                                 ("untrained7", [conv_factors(), rng.normal(size=(IMAGES, FC))], 0.2)]:
        paths[name] = root / f"{name}.h5"
        _write(paths[name], net(factors, noise))
    stats = {}
    for layer in LAYERS:
        stats[layer] = root / f"stats_{layer}.h5"
        joint_layer_statistics([paths[f"seed{s}"] for s in (0, 1, 2)], [0, 1, 2], layer).save(stats[layer])
    csvs = []
    for a, b, kind in [("seed0", "seed1", "trained"), ("seed0", "seed2", "trained"),
                       ("seed1", "seed2", "trained"), ("seed0", "untrained7", "untrained"),
                       ("seed1", "untrained7", "untrained")]:
        csv = root / f"{a}-{b}.csv"
        inputs = Named(a=str(paths[a]), b=str(paths[b]),
                       stats=[str(stats[layer]) for layer in LAYERS] if kind == "trained" else [])
        params = SimpleNamespace(cfg=CFG, layers=LAYERS, kind=kind, net_a=a, net_b=b,
                                 seeds=(int(a[4:]), int(b[4:])) if kind == "trained" else None)
        step.main(inputs, Named(csv=str(csv)), params, [])
        csvs.append(csv)
    return SimpleNamespace(root=root, paths=paths, stats=stats, csvs=csvs)


def _frame(experiment, index=0):
    return pd.read_csv(experiment.csvs[index])


def test_pair_csv_has_every_measure_scope_and_null(experiment):
    frame = _frame(experiment)
    same = frame[(frame["scope"] == "same_layer") & (frame["null"] == "none")]
    assert set(same["measure"]) == set(CFG["measures"])
    assert len(same) == len(LAYERS) * len(CFG["measures"])
    perm = frame[frame["null"] == "permutation"]
    assert sorted(perm["permutation"].unique()) == [0, 1]
    cross = frame[frame["scope"] == "cross_layer"]
    assert len(cross) == len(LAYERS) ** 2 * len(CFG["measures"])
    assert frame["value"].notna().all()


def test_same_layer_covariance_measures_from_streamed_stats_equal_the_activation_path(experiment):
    # The trained pair's covariance measures come from stats/*.h5; recomputing them from the raw
    # activations must give the same numbers.
    from convergent.activations import read_samples

    frame = _frame(experiment)
    for layer in LAYERS:
        x = read_samples(experiment.paths["seed0"], layer)
        y = read_samples(experiment.paths["seed1"], layer)
        for name in ["linear_cka", "cca", "svcca", "pwcca", "procrustes", "matching"]:
            got = frame.query("scope == 'same_layer' and null == 'none' and layer_a == @layer "
                              "and measure == @name")["value"].item()
            assert got == pytest.approx(sim.compute(name, x, y), abs=1e-6), (layer, name)
    n_rows = frame.query("scope == 'same_layer' and null == 'none' and layer_a == 'conv1' "
                         "and measure == 'linear_cka'")["n_rows"].item()
    assert n_rows == IMAGES * PER_IMAGE


def test_cross_layer_cells_use_one_row_per_image_spatial_means(experiment):
    from convergent.activations import read_samples

    frame = _frame(experiment)
    with h5py.File(experiment.paths["seed0"]) as a, h5py.File(experiment.paths["seed1"]) as b:
        conv_a, conv_b = a["layers/conv1/input_mean"][()], b["layers/conv1/input_mean"][()]
    fc_a, fc_b = (read_samples(experiment.paths[n], "fc1") for n in ("seed0", "seed1"))
    cells = {("conv1", "fc1"): (conv_a, fc_b), ("fc1", "conv1"): (fc_a, conv_b),
             ("conv1", "conv1"): (conv_a, conv_b), ("fc1", "fc1"): (fc_a, fc_b)}
    for name in ["linear_cka", "debiased_cka", "cca", "pwcca", "matching", "subspace"]:
        kwargs = pairs.measure_kwargs(CFG).get(name, {})
        for (la, lb), (x, y) in cells.items():
            got = frame.query("scope == 'cross_layer' and layer_a == @la and layer_b == @lb "
                              "and measure == @name")
            assert got["value"].item() == pytest.approx(sim.compute(name, x, y, **kwargs), abs=1e-6), (name, la, lb)
            assert got["n_rows"].item() == IMAGES
    rsa = frame.query("scope == 'same_layer' and null == 'none' and layer_a == 'conv1' and measure == 'rsa'")["value"].item()
    assert rsa == pytest.approx(sim.rsa(conv_a[_kernel_images()], conv_b[_kernel_images()]), abs=1e-6)


def _kernel_images():
    from convergent.sampling import sample_rows, seeded_rng

    rows = sample_rows(IMAGES, CFG["kernel_rows"], seeded_rng(CFG["seed"], "images"))
    return slice(None) if rows is None else rows


def test_permutation_null_and_untrained_sit_below_trained_pairs(experiment):
    frames = pd.concat([pd.read_csv(c) for c in experiment.csvs])
    same = frames[(frames["scope"] == "same_layer") & (frames["measure"] == "linear_cka")]
    trained = same[(same["kind"] == "trained") & (same["null"] == "none")]["value"]
    perm = same[same["null"] == "permutation"]["value"]
    untrained = same[(same["kind"] == "untrained")]["value"]
    assert perm.max() < 0.5 * trained.min()
    assert untrained.max() < 0.5 * trained.min()


def test_summary_figure_and_table(experiment, tmp_path):
    outputs = Named([str(tmp_path / "similarity_same_layer.png")], csv=str(tmp_path / "t.csv"),
                    md=str(tmp_path / "t.md"), tex=str(tmp_path / "t.tex"))
    params = SimpleNamespace(cfg=CFG, layers=LAYERS, figures=FIGURES, statistics=STATISTICS)
    figure_similarity_summary.main(Named(pairs=[str(c) for c in experiment.csvs]), outputs, params, [])
    image = matplotlib.image.imread(outputs[0])
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0
    table = pd.read_csv(outputs.csv)
    assert len(table) == len(LAYERS) * len(CFG["measures"])
    row = table[(table["layer"] == "fc1") & (table["measure"] == "linear_cka")].iloc[0]
    frames = pd.concat([pd.read_csv(c) for c in experiment.csvs])
    values = frames.query("kind == 'trained' and scope == 'same_layer' and null == 'none' "
                          "and layer_a == 'fc1' and measure == 'linear_cka'")["value"]
    assert row["trained_vs_trained_mean"] == pytest.approx(values.mean())
    assert row["trained_vs_trained_std"] == pytest.approx(values.std(ddof=0))
    assert row["trained_vs_trained_pairs"] == 3 and row["trained_vs_untrained_pairs"] == 2
    assert row["permutation_null_pairs"] == 3


def test_cross_layer_figures_and_diagonal_table(experiment, tmp_path):
    pngs = [str(tmp_path / f"similarity_cross_layer_{m}.png") for m in CFG["measures"]]
    outputs = Named(pngs, csv=str(tmp_path / "c.csv"), md=str(tmp_path / "c.md"), tex=str(tmp_path / "c.tex"))
    params = SimpleNamespace(cfg=CFG, layers=LAYERS, figures=FIGURES)
    figure_similarity_cross_layer.main(Named(pairs=[str(c) for c in experiment.csvs]), outputs, params, [])
    for png in pngs:
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 50 and image.std() > 0, png
    table = pd.read_csv(outputs.csv)
    cka = table[(table["measure"] == "linear_cka") & (table["kind"] == "trained")].iloc[0]
    # The layers' factors are independent, so the same layer is the most similar one.
    assert cka["diagonal_mean"] > cka["off_diagonal_mean"]
    assert cka["diagonal_is_best_row"] == 1.0
    proc = table[(table["measure"] == "procrustes") & (table["kind"] == "trained")].iloc[0]
    assert proc["diagonal_mean"] < proc["off_diagonal_mean"] and proc["diagonal_is_best_row"] == 1.0


def test_diagonal_summary_orientation():
    grid = np.array([[0.9, 0.2, 0.1], [0.3, 0.4, 0.8], [0.1, 0.2, 0.7]])
    s = figure_similarity_cross_layer.diagonal_summary(grid, higher_is_similar=True)
    assert s["diagonal_mean"] == pytest.approx(2.0 / 3)
    assert s["off_diagonal_mean"] == pytest.approx(np.mean([0.2, 0.1, 0.3, 0.8, 0.1, 0.2]))
    assert s["diagonal_is_best_row"] == pytest.approx(2 / 3)
    assert figure_similarity_cross_layer.diagonal_summary(1 - grid, False)["diagonal_is_best_row"] == pytest.approx(2 / 3)


@pytest.mark.workflow
def test_tiny_run_writes_every_similarity_figure_readable(tiny_run):
    out = tiny_run / "results" / "tiny"
    measures = sorted(sim.MEASURES)  # the schema default: every measure
    pngs = [out / "figures" / f"similarity_cross_layer_{m}.png" for m in measures]
    pngs.append(out / "figures" / "similarity_same_layer.png")
    for png in pngs:
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0, png
    table = pd.read_csv(out / "tables" / "similarity_cross_layer.csv")
    assert set(table["measure"]) == set(measures) and set(table["kind"]) == {"trained", "untrained"}
    same = pd.read_csv(out / "tables" / "similarity_same_layer.csv")
    assert same[["trained_vs_trained_mean", "trained_vs_untrained_mean", "permutation_null_mean"]].notna().all().all()


def test_compare_pair_reports_progress_per_layer_permutation_and_cross_layer(experiment):
    from support.progress import Recorder

    seen = Recorder()
    frame = pairs.compare_pair(str(experiment.paths["seed0"]), str(experiment.paths["seed1"]), LAYERS, CFG,
                               "untrained", "seed0", "seed1", log=lambda line: None, progress=seen)
    seen.check(len(LAYERS) * (1 + CFG["permutations"]) + 1)
    assert not frame.empty


def test_permutation_null_moves_whole_images(tmp_path):
    """Two unrelated networks whose rows within an image are correlated: the observed linear CKA
    must look like a draw from the step's null. A null that shuffles rows one by one sits below
    the observed value nearly always (measured: p <= 0.1 in ~97 % of such experiments; see
    test_statistics); whole images give p <= 0.1 about as often as 10 %. The rows are a random
    subsample (max_rows), so images keep different numbers of rows."""
    from conftest import write_conv_activations

    rng = np.random.default_rng(21)
    images, per_image, units, perms = 30, 6, 3, 19
    image = np.repeat(np.arange(images), per_image)
    positions = np.stack([image, np.tile(np.arange(per_image), images), np.zeros_like(image)], 1)
    cfg = {**CFG, "measures": ["linear_cka"], "permutations": perms, "max_rows": 150}
    p = []
    for experiment in range(40):
        paths = []
        for net in range(2):
            x = 0.95 * rng.normal(size=(images, units))[image] + 0.3 * rng.normal(size=(len(image), units))
            paths.append(tmp_path / f"{experiment}-{net}.h5")
            write_conv_activations(paths[-1], net, x, positions, np.arange(images), 4, (3, 1, 0))
        cfg["seed"] = experiment
        frame = pairs.compare_pair(str(paths[0]), str(paths[1]), ["conv1"], cfg, "untrained", "a", "b",
                                   log=lambda _: None)
        same = frame[(frame["scope"] == "same_layer")]
        observed = same.loc[same["null"] == "none", "value"].item()
        null = same.loc[same["null"] == "permutation", "value"].to_numpy()
        assert len(null) == perms
        p.append((1 + np.sum(null >= observed)) / (1 + perms))
    assert np.mean(np.array(p) <= 0.1) < 0.3, sorted(p)

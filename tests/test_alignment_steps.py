"""Step scripts of the alignment stage (Li §3), called directly on a small synthetic experiment.

Net 1 is net 0 with its units permuted (plus noise), so the steps must recover that permutation;
net 2 has a dead unit, which must be listed and never matched.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from conftest import STATISTICS, Named, write_conv_activations  # noqa: E402
from convergent.correlation import joint_layer_statistics  # noqa: E402
from convergent.matching import read_match_csv, summarize_pairs  # noqa: E402
from convergent.steps import (  # noqa: E402
    figure_li2016_fig2,
    figure_li2016_fig3,
    figure_li2016_fig7,
    figure_li2016_mean_activation,
    match,
    mutual_info,
    table_li2016_mi,
    table_li2016_table1,
)

UNITS, IMAGES, SIDE, PER_IMAGE, OUT_SIDE = 8, 40, 12, 10, 6
RF = (3, 2, -1)  # 3x3 window, stride 2, padding 1: position (y, x) sees rows 2y-1 .. 2y+1
PERM = np.array([3, 0, 6, 1, 7, 2, 5, 4])  # unit u of net 0 is unit PERM[u] of net 1
DEAD = 5  # unit of net 2 that never fires
CFG_MATCH = {"top_k": 2, "patches": 3, "scatter_pairs": 1}
CFG_MI = {"samples": 300, "seed": 0, "bins": 20, "zero_threshold": 1e-6, "block_units": 3, "device": "cpu",
          "pairs": "first"}
FIGURES = {"dpi": 60, "formats": ["png"]}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("alignment")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(IMAGES, SIDE, SIDE, 1), dtype=np.uint8)
    positions = np.stack(
        [np.repeat(np.arange(IMAGES), PER_IMAGE),
         rng.integers(0, OUT_SIDE, IMAGES * PER_IMAGE), rng.integers(0, OUT_SIDE, IMAGES * PER_IMAGE)], axis=1)
    latent = rng.normal(size=(IMAGES * PER_IMAGE, UNITS))
    net0 = np.maximum(latent, 0)
    net1 = np.zeros_like(net0)
    net1[:, PERM] = np.maximum(latent + 0.3 * rng.normal(size=latent.shape), 0)
    net2 = np.maximum(latent @ rng.normal(size=(UNITS, UNITS)) / 3 + rng.normal(size=latent.shape), 0)
    net2[:, DEAD] = 0.0
    paths = []
    for seed, samples in enumerate((net0, net1, net2)):
        paths.append(root / f"seed{seed}.h5")
        write_conv_activations(paths[-1], seed, samples, positions, np.arange(IMAGES), OUT_SIDE, RF)
    stats_path = root / "stats" / "conv1.h5"
    joint_layer_statistics(paths, [0, 1, 2], "conv1").save(stats_path)
    pairs = [(0, 1), (0, 2), (1, 2)]
    matches = {(a, b): root / "matching" / "conv1" / f"{a}-{b}.csv" for a, b in pairs}
    match.main(Named(stats=stats_path), Named(csv=list(matches.values())), SimpleNamespace(pairs=pairs), [])
    mi = Named(mi=root / "mi" / "conv1" / "0-1.npz", matching=root / "matching_mi" / "conv1" / "0-1.csv")
    mutual_info.main(Named(a=paths[0], b=paths[1]), mi, SimpleNamespace(cfg=CFG_MI, layer="conv1", pair=(0, 1), threads=1), [])
    return SimpleNamespace(root=root, paths=paths, stats=stats_path, matches=matches, mi=mi, images=images)


def test_match_recovers_the_permutation(experiment):
    frame = read_match_csv(experiment.matches[(0, 1)])
    assert frame["semi_partner"].tolist() == PERM.tolist()
    assert frame["match_partner"].tolist() == PERM.tolist()
    assert frame["coincide"].all() and (frame["semi_value"] > 0.8).all()


def test_match_lists_dead_units_without_matching_them(experiment):
    frame = read_match_csv(experiment.matches[(0, 2)])
    assert frame["dead_b"].tolist() == [u == DEAD for u in range(UNITS)]
    assert DEAD not in frame["semi_partner"].tolist() and DEAD not in frame["match_partner"].tolist()
    reverse = read_match_csv(experiment.matches[(1, 2)])
    assert not reverse["dead_a"].any()


def test_mutual_info_step_recovers_the_permutation_on_paired_rows(experiment):
    data = np.load(experiment.mi.mi)
    assert data["mi"].shape == (UNITS, UNITS) and len(data["rows"]) == CFG_MI["samples"]
    assert np.all(np.diff(data["rows"]) > 0)
    assert data["mi"].argmax(axis=1).tolist() == PERM.tolist()
    frame = read_match_csv(experiment.mi.matching)
    assert frame["match_partner"].tolist() == PERM.tolist()


def test_table1_step_reports_first_pair_and_spread(experiment, tmp_path):
    out = Named(csv=tmp_path / "t1.csv", md=tmp_path / "t1.md", tex=tmp_path / "t1.tex")
    table_li2016_table1.main(Named(matches=list(experiment.matches.values())), out,
                             SimpleNamespace(layers=["conv1"], first=(0, 1), statistics=STATISTICS), [])
    table = pd.read_csv(out.csv)
    expected = summarize_pairs({p: read_match_csv(f) for p, f in experiment.matches.items()}, first=(0, 1))
    row = table.iloc[0]
    assert row["layer"] == "conv1" and row["n_pairs"] == 3 and row["units"] == UNITS
    for key in ("semi", "matching", "overlap", "semi_mean", "semi_std", "overlap_std"):
        assert row[key] == pytest.approx(expected[key])
    assert row["overlap"] == 1.0
    assert "conv1" in out.md.read_text() and "\\begin{tabular}" in out.tex.read_text()


def test_mi_table_compares_the_two_measures(experiment, tmp_path):
    out = Named(csv=tmp_path / "mi.csv", md=tmp_path / "mi.md", tex=tmp_path / "mi.tex")
    table_li2016_mi.main(Named(corr=[experiment.matches[(0, 1)]], mi=[experiment.mi.matching]), out,
                         SimpleNamespace(cfg=CFG_MATCH, statistics=STATISTICS), [])
    table = pd.read_csv(out.csv)
    row = table.iloc[0]
    mean = table.iloc[1]  # one pair: the layer's mean row repeats it and says no interval is possible
    assert mean["pair"] == "mean" and mean["mi_semi"] == pytest.approx(row["mi_semi"])
    assert np.isnan(mean["mi_semi_lo"]) and "one seed pair" in mean["note"]
    corr, mi = read_match_csv(experiment.matches[(0, 1)]), read_match_csv(experiment.mi.matching)
    best = [set(map(tuple, f.nlargest(2, "semi_value")[["unit", "semi_partner"]].values)) for f in (corr, mi)]
    assert row["pair"] == "0-1" and row["top2_same"] == len(best[0] & best[1])
    assert row["semi_same"] == 1.0 and row["matching_same"] == 1.0 and row["mi_semi"] > 0


def assert_readable_png(path):
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0.02  # not a blank canvas


def test_figure_steps_write_readable_pngs(experiment, tmp_path, monkeypatch):
    first = experiment.matches[(0, 1)]
    common = dict(pair=(0, 1), layers=["conv1"], figures=FIGURES)
    acts = dict(act_a=experiment.paths[0], act_b=experiment.paths[1])
    figure_li2016_fig3.main(Named(matching=[first]), Named([tmp_path / "li2016_fig3_conv1.png"]),
                            SimpleNamespace(**common), [])
    figure_li2016_fig7.main(Named(matching=[first], **acts), Named([tmp_path / "li2016_fig7_conv1.png"]),
                            SimpleNamespace(cfg=CFG_MATCH, **common), [])
    figure_li2016_mean_activation.main(Named(stats=[experiment.stats]), Named([tmp_path / "mean.png"]),
                                       SimpleNamespace(figures=FIGURES), [])
    monkeypatch.setattr(figure_li2016_fig2, "load_probe_images", lambda cfg, index: experiment.images[index])
    figure_li2016_fig2.main(
        Named(matching=[first], models=[], **acts),
        Named([tmp_path / "li2016_fig2_conv1.png", tmp_path / "li2016_fig2_conv1.pdf"]),
        SimpleNamespace(cfg=CFG_MATCH, figure="li2016_fig2", measure="correlation", dataset={}, **common), [])
    for name in ("li2016_fig3_conv1", "li2016_fig7_conv1", "mean", "li2016_fig2_conv1"):
        assert_readable_png(tmp_path / f"{name}.png")
    assert (tmp_path / "li2016_fig2_conv1.pdf").stat().st_size > 1000


def test_outputs_named_picks_each_layers_files():
    from convergent.plotting import outputs_named

    outputs = ["f/li2016_fig3_conv1.pdf", "f/li2016_fig3_conv1.png", "f/li2016_fig3_conv10.png"]
    assert outputs_named(outputs, "li2016_fig3_conv1") == outputs[:2]
    with pytest.raises(ValueError):
        outputs_named(outputs, "li2016_fig3_fc1")


def test_patch_rows_show_each_unit_and_its_partner(experiment):
    from convergent.activations import read_top_activations

    top_a = read_top_activations(experiment.paths[0], "conv1")[:, :2]
    top_b = read_top_activations(experiment.paths[1], "conv1")[:, :2]
    rows = figure_li2016_fig2.unit_rows([0, 4], PERM[[0, 4]], experiment.images, top_a, top_b,
                                        {"receptive_field": RF, "kind": "spatial"}, None, None)
    assert rows.shape == (2, 2 + 2 + 2, 3, 3, 1)
    from convergent.patches import cut_patches

    np.testing.assert_array_equal(rows[1, :2], cut_patches(experiment.images, top_a[4], *RF))
    np.testing.assert_array_equal(rows[1, 4:], cut_patches(experiment.images, top_b[PERM[4]], *RF))
    assert np.all(rows[:, 2:4] == 255)


@pytest.mark.workflow
def test_tiny_run_has_every_alignment_output_for_every_layer(tiny_run):
    from conftest import tiny_config, tiny_layers

    out = tiny_run / "results" / tiny_config()["experiment"]
    layers = tiny_layers()
    for layer in layers:
        for n in (2, 3, 4, 7):
            assert_readable_png(out / "figures" / f"li2016_fig{n}_{layer}.png")
        assert (out / "matching" / layer / "0-1.csv").exists() and (out / "mi" / layer / "0-1.npz").exists()
    assert_readable_png(out / "figures" / "li2016_mean_activation.png")
    for stem in ("li2016_table1", "li2016_mi_vs_correlation"):
        # the MI table follows each layer's pair rows with its mean row (with the interval)
        assert list(dict.fromkeys(pd.read_csv(out / "tables" / f"{stem}.csv")["layer"])) == layers
        assert (out / "tables" / f"{stem}.md").exists() and (out / "tables" / f"{stem}.tex").exists()


@pytest.mark.workflow
def test_figure_settings_of_match_rerun_only_figures_and_tables(tiny_run, tmp_path):
    from conftest import copy_run, planned_jobs, tiny_config, write_config

    run = copy_run(tiny_run, tmp_path / "run")
    config = tiny_config()
    config["match"] = {**config.get("match", {}), "top_k": 3}
    jobs = planned_jobs(run, write_config(run, config))
    assert "match" not in jobs and "mutual_info" not in jobs, jobs
    assert {"figure_li2016_fig2", "figure_li2016_fig4", "table_li2016_mi"} <= set(jobs), jobs

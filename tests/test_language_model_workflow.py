"""The workflow on a language-model seed family: tiny random BERTs saved with save_pretrained (a
hub download's format), probe text from a file, a residual-stream layer (hidden_states.2) and an
MLP layer (encoder.layer.1.intermediate). Nothing is trained: seeds are imported, the untrained
baseline is drawn from the configuration. The whole DAG runs (every analysis rule and figure on
both layers); the tests look closer at what differs for text: paired token rows, the token figures
and tables (Figs. 2/4, 5/12/6), mutual information with signed bins, probe text from `datasets`."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

pytest.importorskip("transformers", reason="the [text] extra (transformers) is not installed")

from conftest import planned_jobs, snakemake, write_config  # noqa: E402
from support.language_models import family, write_text  # noqa: E402

pytestmark = pytest.mark.workflow
LAYERS = ["hidden_states.2", "mlp1"]


def lm_config(workdir, seeds) -> dict:
    return {
        "experiment": "lm",
        "seeds": sorted(seeds),
        "untrained_seeds": [7],
        "checkpoints": {str(seed): str(path) for seed, path in seeds.items()},
        "dataset": {"name": "text", "path": str(workdir / "probe.txt"), "probe_passages": 30, "max_length": 20},
        "model": {"huggingface": str(seeds[0]),
                  "layers": ["hidden_states.2", {"layer": "encoder.layer.1.intermediate", "name": "mlp1"}]},
        "extract": {"positions_per_image": 4, "top_k": 4, "batch_size": 16},
        "figures": {"formats": ["png"], "dpi": 60},
        "subspace": {"repeats": 2, "simple_eps": [0.5], "simple_pairs": "first", "restarts": 1},
    }


# Outputs that differ for text, looked at closely below (the whole DAG runs).
TARGETS = ([f"results/lm/figures/li2016_fig2_{layer}.png" for layer in LAYERS]
           + [f"results/lm/figures/li2016_fig{n}_{LAYERS[0]}.png" for n in (5, 12, 6)]
           + [f"results/lm/mi/{layer}/0-1.npz" for layer in LAYERS]
           + ["results/lm/activations/untrained7.h5"])


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lm_run")
    seeds = family(workdir / "models", "bert", seeds=(0, 1, 2))  # 3 pairs: intervals over seeds too
    write_text(workdir / "probe.txt", 40)
    configfile = write_config(workdir, lm_config(workdir, seeds))
    jobs = planned_jobs(workdir, configfile)
    assert jobs["import_checkpoint"] == 3 and jobs["untrained"] == 1 and "train" not in jobs
    # image-only stages are not planned for text; the cluster figures show units by their tokens
    assert jobs["figure_li2016_cluster_units"] == 1 and "stitch" not in jobs and "connectivity" not in jobs
    snakemake(workdir, configfile=configfile, timeout=1500)  # the whole DAG (rule all)
    (workdir / "planned.json").write_text(__import__("json").dumps(jobs))
    return workdir


def test_the_whole_text_workflow_runs_every_analysis_rule_and_figure(lm_run):
    """Every rule the text DAG plans ran (nothing is left to do), on both layers: each analysis
    table and figure of the papers, the statistics and the report's tables."""
    import json

    planned = json.loads((lm_run / "planned.json").read_text())
    expected = {"correlate", "match", "mutual_info", "sparse_map", "cluster", "subspace", "subspace_sample_size",
                "similarity", "similarity_untrained", "bootstrap", "bootstrap_subspace", "table_tests",
                "table_li2016_table1", "table_li2016_table2", "table_li2016_mi", "table_li2016_clusters",
                "table_wang2018_similarity", "table_rogue_dimensions", "figure_li2016_fig1", "figure_li2016_fig2",
                "figure_li2016_fig3", "figure_li2016_fig4", "figure_li2016_fig7", "figure_li2016_sparsity",
                "figure_li2016_clusters", "figure_li2016_cluster_units", "figure_wang2018_fig1",
                "figure_wang2018_fig2", "figure_similarity_summary", "figure_similarity_cross_layer"}
    assert expected <= set(planned), sorted(expected - set(planned))
    assert planned_jobs(lm_run, lm_run / "config.yaml") == {}  # nothing left to do
    figures = lm_run / "results" / "lm" / "figures"
    for stem in ("li2016_fig1", "li2016_fig3", "li2016_fig5", "li2016_fig6", "li2016_fig12", "li2016_sparsity"):
        for layer in LAYERS:
            assert (figures / f"{stem}_{layer}.png").stat().st_size > 1000, (stem, layer)


def test_text_run_writes_paired_token_rows_and_every_target(lm_run):
    for target in TARGETS:
        assert (lm_run / target).stat().st_size > 1000, target
    acts = lm_run / "results" / "lm" / "activations"
    with h5py.File(acts / "seed0.h5") as a, h5py.File(acts / "seed1.h5") as b, h5py.File(acts / "untrained7.h5") as c:
        np.testing.assert_array_equal(a["probe/token_ids"][()], b["probe/token_ids"][()])
        np.testing.assert_array_equal(a["probe/token_ids"][()], c["probe/token_ids"][()])
        valid = a["probe/valid"][()]
        for layer in LAYERS:
            assert a[f"layers/{layer}"].attrs["kind"] == "tokens"
            positions = a[f"layers/{layer}/positions"][()]
            np.testing.assert_array_equal(positions, b[f"layers/{layer}/positions"][()])
            assert valid[positions[:, 0], positions[:, 1]].all()  # padding and [CLS]/[SEP] never sampled
    log = (lm_run / "results" / "lm" / "logs" / "figure_li2016_fig2.log").read_text()
    assert "strongest tokens in context" in log
    log = (lm_run / "results" / "lm" / "logs" / "figure_li2016_cluster_units.log").read_text()
    assert "strongest token occurrences in context" in log
    import_log = (lm_run / "results" / "lm" / "logs" / "import_checkpoint" / "seed1.log").read_text()
    assert "tokenizes all 40 passages" in import_log


def test_token_table_of_best_and_worst_units_is_in_the_report_tables(lm_run):
    import pandas as pd

    table = pd.read_csv(lm_run / "results" / "lm" / "tables" / "li2016_fig2_tokens.csv")
    assert set(table["layer"]) == set(LAYERS) and set(table["rank"]) == {"best", "worst"}
    for layer, rows in table.groupby("layer"):
        matching = pd.read_csv(lm_run / "results" / "lm" / "matching" / layer / "0-1.csv").set_index("unit")
        np.testing.assert_allclose(rows["value"], matching.loc[rows["unit"], "semi_value"])
        assert (rows["partner"].to_numpy() == matching.loc[rows["unit"], "semi_partner"].to_numpy()).all()
        best, worst = rows[rows["rank"] == "best"], rows[rows["rank"] == "worst"]
        assert best["value"].min() >= worst["value"].max()
    assert table["seed0"].str.contains(r"\[[^\]]+\]").all() and table["seed1"].str.contains(r"\[").all()


def test_signed_token_layers_get_percentile_bins_without_a_zero_bin(lm_run):
    for layer in LAYERS:
        with np.load(lm_run / "results" / "lm" / "mi" / layer / "0-1.npz") as npz:
            assert not bool(npz["zero_bin"]) and np.isfinite(npz["mi"]).any()


def test_a_language_model_without_checkpoints_is_an_error(lm_run, tmp_path):
    config = lm_config(lm_run, {0: lm_run / "models" / "bert-seed0", 1: lm_run / "models" / "bert-seed1"})
    config["checkpoints"] = {"0": config["checkpoints"]["0"]}
    result = snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "language models are not trained by the pipeline" in text and "seeds [1]" in text


def test_probe_text_from_a_saved_datasets_directory_gives_the_same_rows(lm_run):
    """dataset.hub through Snakemake: the same passages as a `datasets` directory (save_to_disk, what
    a hub download caches) instead of the text file give byte-identical token rows and activations."""
    import yaml

    datasets = pytest.importorskip("datasets", reason="the [text] extra (datasets) is not installed")
    passages = (lm_run / "probe.txt").read_text().splitlines()
    saved = lm_run / "probe_dataset"
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": passages})}).save_to_disk(str(saved))
    config = yaml.safe_load((lm_run / "config.yaml").read_text())
    config["experiment"] = "lmhub"
    config["dataset"] = {"name": "text", "hub": str(saved), "split": "validation", "text_field": "text",
                         "probe_passages": 30, "max_length": 20}
    configfile = write_config(lm_run, config, name="hub.yaml")
    snakemake(lm_run, "results/lmhub/activations/seed0.h5", configfile=configfile, timeout=900)
    with h5py.File(lm_run / "results/lm/activations/seed0.h5") as a, \
            h5py.File(lm_run / "results/lmhub/activations/seed0.h5") as b:
        np.testing.assert_array_equal(a["probe/token_ids"][()], b["probe/token_ids"][()])
        for layer in LAYERS:
            np.testing.assert_array_equal(a[f"layers/{layer}/samples"][()], b[f"layers/{layer}/samples"][()])

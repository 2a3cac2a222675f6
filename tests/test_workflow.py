"""The whole workflow through Snakemake on the tiny experiment: outputs, reruns, lint, presets."""

import re
import shutil

import numpy as np
import pytest
import torch

from conftest import REPO, copy_run, planned_jobs, snakemake, tiny_config, tiny_layers, write_config
from convergent.activations import layer_names, read_image_index, read_positions, read_samples

pytestmark = pytest.mark.workflow
LAYERS = tiny_layers()


def test_tiny_run_outputs(tiny_run):
    out = tiny_run / "results" / "tiny"
    seeds = tiny_config()["seeds"]
    for seed in seeds:
        assert (out / "models" / f"seed{seed}.json").exists()
        assert layer_names(out / "activations" / f"seed{seed}.h5") == LAYERS
        assert (out / "logs" / "train" / f"seed{seed}.log").read_text().strip()
        assert (out / "benchmarks" / "train" / f"seed{seed}.tsv").exists()
    assert (out / "activations" / "untrained7.h5").exists()
    first = out / "activations" / f"seed{seeds[0]}.h5"
    for seed in seeds[1:]:  # rows paired across networks
        other = out / "activations" / f"seed{seed}.h5"
        np.testing.assert_array_equal(read_image_index(first), read_image_index(other))
        for layer in LAYERS[:-1]:
            np.testing.assert_array_equal(read_positions(first, layer), read_positions(other, layer))
    for layer in LAYERS:
        assert (out / "stats" / f"{layer}.h5").exists()
        assert (out / "figures" / f"li2016_fig1_{layer}.png").stat().st_size > 5000
    for ext in ("csv", "md", "tex"):
        assert (out / "tables" / f"accuracy.{ext}").exists()
    assert not list(out.glob("**/.*.tmp*")), "temporary files left behind"


def test_tables_carry_intervals_and_tests(tiny_run):
    """Issue 12 end to end: interval columns in the summary tables, the tests and seeds-needed
    tables, each sane (lo <= estimate <= hi, p in [0, 1], Holm stated)."""
    import pandas as pd

    tables = tiny_run / "results" / "tiny" / "tables"
    for stem in ("tests", "seeds_needed"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{stem}.{ext}").stat().st_size > 100

    def bounded(lo, estimate, hi, note=None):
        ok = lo.notna() & hi.notna()
        assert ok.any() and (lo[ok] <= hi[ok]).all()
        # A percentile interval inherits the bootstrap's bias and can then leave out the estimate;
        # the pipeline says so in the row's note, and only such rows may.
        if note is not None:
            ok &= ~note.fillna("").str.contains("bootstrap bias")
        assert (lo[ok] <= estimate[ok] + 1e-9).all() and (estimate[ok] <= hi[ok] + 1e-9).all()

    table1 = pd.read_csv(tables / "li2016_table1.csv")
    assert {"matching_lo", "matching_hi", "level", "interval", "note"} <= set(table1.columns)
    for q in ("semi", "matching", "overlap"):
        bounded(table1[f"{q}_lo"], table1[f"{q}_mean"], table1[f"{q}_hi"], table1["note"])
    # what was resampled, per row; a row can add a column's bias warning (Table 1 puts them under the table)
    assert table1["note"].str.contains("over seeds and inputs").all()
    same = pd.read_csv(tables / "similarity_same_layer.csv")
    for series in ("trained_vs_trained", "trained_vs_untrained"):
        bounded(same[f"{series}_lo"], same[f"{series}_mean"], same[f"{series}_hi"], same[f"{series}_note"])
    assert same.loc[same["measure"] == "linear_cka", "trained_vs_trained_note"].str.contains("inputs").all()
    assert same.loc[same["measure"] == "rsa", "trained_vs_trained_note"].str.startswith("over seeds (").all()
    wang = pd.read_csv(tables / "wang2018_similarity.csv")
    bounded(wang["lo"], wang["s_mean"], wang["hi"])
    tests = pd.read_csv(tables / "tests.csv")
    assert set(tests["test"]) == {"trained vs untrained", "permutation null", "layer difference"}
    assert tests["p_value"].between(0, 1).all() and tests["p_adjusted"].between(0, 1).all()
    assert (tests["p_adjusted"] >= tests["p_value"] - 1e-12).all()
    assert tests["correction"].str.startswith("Holm over").all()
    bounded(tests["lo"], tests["estimate"], tests["hi"])
    perm = tests[tests["test"] == "permutation null"]
    assert len(perm) == 2 * len(LAYERS) and perm["p_method"].str.contains("1 \\+ 99").all()
    needed = pd.read_csv(tables / "seeds_needed.csv")
    assert (needed["seeds"] == len(tiny_config()["seeds"])).all() and (needed["width"] > 0).all()
    # bounded measures' intervals stay in their range (convergent.ranges)
    for measure, (lo, hi) in (("linear_cka", (0, 1)), ("cca", (0, 1)), ("rsa", (-1, 1))):
        rows = same[same["measure"] == measure]
        assert (rows["trained_vs_trained_lo"].dropna() >= lo).all() and (rows["trained_vs_trained_hi"].dropna() <= hi).all()
    assert (wang["lo"].dropna() >= 0).all() and (wang["hi"].dropna() <= 1).all()
    # the note stands once under the Markdown table, not in a column
    md = (tables / "li2016_table1.md").read_text()
    # the notes stand once under the Markdown table; rows keep at most a reference such as [1]
    assert not any("over seeds" in line for line in md.splitlines() if line.startswith("|"))
    under = [line.split("] ", 1)[-1] for line in md.splitlines() if not line.startswith("|")]  # "[k] note"
    assert all(under.count(note) == 1 for note in table1["note"].unique())
    # the tables that gained intervals (issue 12, part 4)
    accuracy = pd.read_csv(tables / "accuracy.csv")
    mean = accuracy[accuracy["network"].str.startswith("mean")].iloc[0]
    bounded(pd.Series([mean["lo"]]), pd.Series([mean["heldout_accuracy"]]), pd.Series([mean["hi"]]))
    cross = pd.read_csv(tables / "similarity_cross_layer.csv")
    bounded(cross["diagonal_lo"], cross["diagonal_mean"], cross["diagonal_hi"])
    for stem, column in (("li2016_mi_vs_correlation", "mi_semi_lo"), ("li2016_clusters", "clusters between-net sim lo"),
                         ("li2016_table2", "note")):
        table = pd.read_csv(tables / f"{stem}.csv")
        assert column in table.columns and "note" in table.columns, stem


def test_long_jobs_log_progress(tiny_run):
    """Every job that counts its work ends its log with a progress line: what, N/N, a rate, done."""
    logs = tiny_run / "results" / "tiny" / "logs"
    seed = tiny_config()["seeds"][0]
    for log in [logs / "train" / f"seed{seed}.log", logs / "extract" / f"seed{seed}.log",
                logs / "correlate" / f"{LAYERS[0]}.log"]:
        text = log.read_text()
        assert re.search(r": (\d+)/\1, [0-9.e+naninf]+/s, \d+ s, done$", text, re.M), (log, text)


def test_second_run_has_nothing_to_do(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    assert planned_jobs(run, run / "config.yaml") == {}


def test_figure_setting_reruns_only_figures(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    config = tiny_config()
    config["figures"]["dpi"] = 72
    jobs = planned_jobs(run, write_config(run, config))
    assert jobs.get("figure_li2016_fig1") == len(LAYERS)
    assert all(rule.startswith("figure") or rule in ("all", "report") for rule in jobs), jobs


def test_train_setting_reruns_everything_downstream_of_training(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    config = tiny_config()
    config["train"]["lr"] = 0.01
    jobs = planned_jobs(run, write_config(run, config))
    n_seeds = len(config["seeds"])
    assert jobs["train"] == n_seeds and jobs["extract"] == n_seeds  # not the untrained baseline's
    assert jobs["correlate"] == len(LAYERS) and jobs["figure_li2016_fig1"] == len(LAYERS)
    assert "untrained" not in jobs


def test_lint_is_clean(tmp_path):
    config = write_config(tmp_path, tiny_config())
    result = snakemake(tmp_path, "--lint", configfile=config, check=False)
    text = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in text, text[-3000:]


@pytest.mark.parametrize("preset", sorted((REPO / "workflow" / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_presets_plan_the_full_dag(preset, tmp_path):
    jobs = planned_jobs(tmp_path, preset)
    import yaml

    seeds = yaml.safe_load(preset.read_text())["seeds"]
    # language-model presets read every seed from the hub (import_checkpoint), never train
    assert jobs.get("train", 0) + jobs.get("import_checkpoint", 0) == len(seeds) and jobs["correlate"] >= 5


def test_bring_your_own_checkpoints(tiny_run, tmp_path):
    """Networks trained elsewhere (a convergent checkpoint, and a bare state_dict) enter at
    `extract` and give the same activations as the networks trained here."""
    models = tiny_run / "results" / "tiny" / "models"
    shutil.copy(models / "seed0.pt", tmp_path / "mine0.pt")
    payload = torch.load(models / "seed1.pt", weights_only=False)
    torch.save(payload["state_dict"], tmp_path / "elsewhere1.pt")
    config = tiny_config()
    config.update(seeds=[0, 1], untrained_seeds=[],
                  checkpoints={"0": str(tmp_path / "mine0.pt"), "1": str(tmp_path / "elsewhere1.pt")})
    configfile = write_config(tmp_path, config)
    targets = [f"results/tiny/activations/seed{s}.h5" for s in (0, 1)]
    jobs = planned_jobs(tmp_path, configfile, *targets)
    assert jobs.get("import_checkpoint") == 2 and "train" not in jobs
    snakemake(tmp_path, *targets, configfile=configfile)
    for seed in (0, 1):
        ours = tiny_run / "results" / "tiny" / "activations" / f"seed{seed}.h5"
        theirs = tmp_path / "results" / "tiny" / "activations" / f"seed{seed}.h5"
        for layer in LAYERS:
            np.testing.assert_array_equal(read_samples(ours, layer), read_samples(theirs, layer))


def test_checkpoint_of_wrong_architecture_is_refused(tmp_path):
    from convergent.models import build_model

    torch.save(build_model("resnet18", 3, 10, 32).state_dict(), tmp_path / "resnet.pt")
    config = tiny_config()
    config.update(seeds=[0, 1], untrained_seeds=[], checkpoints={"0": str(tmp_path / "resnet.pt")})
    configfile = write_config(tmp_path, config)
    result = snakemake(tmp_path, "results/tiny/models/seed0.pt", configfile=configfile, check=False)
    assert result.returncode != 0
    log = (tmp_path / "results" / "tiny" / "logs" / "import_checkpoint" / "seed0.log").read_text()
    assert "does not fit architecture 'small_cnn'" in log and "checkpoints.0" in log

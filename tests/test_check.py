"""`convergent check`: an experiment's config, inputs and files checked without running it, one
line per problem naming the key or file. Real files in the real formats, damaged on disk."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import REPO, write_config
from convergent.cli import main as convergent
from convergent.correlation import joint_layer_statistics
from convergent.data import load_dataset
from convergent.extraction import extract_activations
from convergent.models import build_model
from convergent.tables import write_table
from convergent.training import atomic_save, checkpoint_payload

SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
DATASET = {"name": "mnist5k", "heldout": 40, "probe_images": 8, "train_images": 64}
EXTRACT = {"positions_per_image": 3, "position_seed": 1, "top_k": 2, "batch_size": 4, "dtype": "float32"}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A finished experiment's files, written by the library's own writers."""
    root = tmp_path_factory.mktemp("exp")
    out = root / "results" / "x"
    splits = load_dataset(DATASET)
    images = torch.stack([splits.heldout[i][0] for i in range(8)])
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("small_cnn", 1, 10, 28).eval()
        metrics = {"seed": seed, "heldout_accuracy": 0.1, "trained": True, "history": []}
        atomic_save(checkpoint_payload(model, "small_cnn", splits, seed, metrics), out / "models" / f"seed{seed}.pt")
        extract_activations(model, TensorDataset(images, torch.zeros(8)), np.arange(8), ["conv1", "fc1"],
                            out / "activations" / f"seed{seed}.h5", EXTRACT,
                            {"seed": seed, "architecture": "small_cnn"}, 1, 28, torch.device("cpu"), progress=False)
    acts = [out / "activations" / f"seed{s}.h5" for s in (0, 1)]
    joint_layer_statistics(acts, [0, 1], "conv1").save(out / "stats" / "conv1.h5")
    write_table(pd.DataFrame({"layer": ["conv1"], "value": [0.5]}), out / "tables" / "t")
    write_config(root, {"experiment": "x", "seeds": [0, 1], "dataset": DATASET,
                        "model": {"architecture": "small_cnn"}})
    return root


def _check(workdir, monkeypatch, capsys, *args):
    monkeypatch.chdir(workdir)
    status = convergent(["check", "--schema", SCHEMA, *args])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def test_a_sound_experiment_passes(experiment, monkeypatch, capsys):
    status, lines, err = _check(experiment, monkeypatch, capsys)
    assert (status, lines) == (0, []), lines
    assert "ok: 0 problems; 8 result files checked" in err  # 2 models, 2 activations, stats, 3 tables


def test_every_damage_is_one_line_naming_its_file_or_key(experiment, tmp_path, monkeypatch, capsys):
    root = tmp_path / "exp"
    shutil.copytree(experiment, root)
    out = root / "results" / "x"
    # an activation file cut short, as by a full disk
    act = out / "activations" / "seed1.h5"
    act.write_bytes(act.read_bytes()[:3000])
    # a table changed after it was written
    with open(out / "tables" / "t.csv", "a") as handle:
        handle.write("fc1,0.7\n")
    # what a SIGKILLed writer leaves
    (out / "models" / ".seed0.pt.tmp4242.pt").write_bytes(b"PK partial")
    # statistics with a NaN between live units
    import h5py

    with h5py.File(out / "stats" / "conv1.h5", "r+") as h5:
        corr = h5["corr"][()]
        live = np.flatnonzero(~h5["dead"][()].ravel())
        corr[live[0], live[1]] = np.nan
        h5["corr"][...] = corr
    # inputs: a checkpoint missing, one that does not fit, and a layer the model lacks
    wrong = tmp_path / "wrong.pt"
    torch.save({"features.conv1.weight": torch.zeros(3, 3)}, wrong)
    write_config(root, {"experiment": "x", "seeds": [0, 1], "dataset": DATASET,
                        "model": {"architecture": "small_cnn", "layers": ["conv1", "conv9"]},
                        "checkpoints": {"0": str(wrong), "1": "gone.pt"}})

    status, lines, err = _check(root, monkeypatch, capsys)
    assert status == 1
    by_where = {}
    for line in lines:
        where, _, message = line.partition(": ")
        by_where.setdefault(where, []).append(message)
    assert by_where.pop("checkpoints.0")[0].startswith(f"checkpoint {wrong} (config key 'checkpoints.0') does not "
                                                       "fit architecture 'small_cnn'")
    assert by_where.pop("checkpoints.1") == ["gone.pt does not exist"]
    assert "conv9" in by_where.pop("model")[0]
    activation = by_where.pop("results/x/activations/seed1.h5")[0]
    assert "is damaged" in activation and "snakemake --forcerun results/x/activations/seed1.h5" in activation
    assert by_where.pop("results/x/tables/t.csv")[0].startswith("content differs from the SHA-256 recorded")
    assert "temporary file left by a killed job" in by_where.pop("results/x/models/.seed0.pt.tmp4242.pt")[0]
    assert "non-finite correlations between live units" in by_where.pop("results/x/stats/conv1.h5")[0]
    assert not by_where, by_where  # nothing else reported, one line each
    assert len(lines) == 7 and "7 problems" in err


def test_unpaired_activation_files_are_reported(experiment, tmp_path, monkeypatch, capsys):
    root = tmp_path / "exp"
    shutil.copytree(experiment, root)
    import h5py

    act = root / "results" / "x" / "activations" / "seed1.h5"
    with h5py.File(act, "r+") as h5:
        h5["probe/image_index"][0] = 99  # probe inputs no longer those of seed0
    act.with_name(".seed1.h5.sha256").unlink()  # an edit on purpose: no record to contradict it
    status, lines, _ = _check(root, monkeypatch, capsys, "--no-inputs")
    assert status == 1 and len(lines) == 2 and all("are not paired for layer" in line for line in lines), lines


def test_an_invalid_config_names_the_key(tmp_path, monkeypatch, capsys):
    write_config(tmp_path, {"experiment": "x", "seeds": [0, 1], "dataset": {"name": "mnist5k"},
                            "train": {"lr": "fast"}})
    status, lines, _ = _check(tmp_path, monkeypatch, capsys)
    assert status == 2 and lines == ["config.yaml: config key '(top level)': 'model' is a required property",
                                     "config.yaml: config key 'train.lr': 'fast' has the wrong type; expected number"]


@pytest.mark.workflow
def test_check_passes_the_tiny_run_and_names_a_file_damaged_in_it(tiny_run, tmp_path, monkeypatch, capsys):
    from conftest import copy_run

    run = copy_run(tiny_run, tmp_path / "run")
    status, lines, err = _check(run, monkeypatch, capsys)
    assert (status, lines) == (0, []) and "ok: 0 problems;" in err
    act = run / "results" / "tiny" / "activations" / "seed2.h5"
    act.write_bytes(act.read_bytes()[:-1000])
    status, lines, _ = _check(run, monkeypatch, capsys, "--no-inputs")
    assert status == 1 and lines == [f"results/tiny/activations/seed2.h5: activation file is damaged: truncated: "
                                     f"{act.stat().st_size} of its {act.stat().st_size + 1000} bytes; remake it: "
                                     "snakemake --forcerun results/tiny/activations/seed2.h5 (or delete it and rerun "
                                     "snakemake)"]

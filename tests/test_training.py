"""Deterministic training, and a killed job resuming to exactly the uninterrupted result."""

import pytest
import torch

import convergent.training as training
from convergent.checkpoints import fit_state_dict, read_state_dict
from convergent.data import load_dataset
from convergent.models import build_model
from convergent.training import load_checkpoint, train_model

CFG = dict(epochs=2, batch_size=32, optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4,
           milestones=[1], gamma=0.1, augment="crop", device="cpu", amp=True, num_workers=0)


@pytest.fixture(scope="module")
def splits():
    return load_dataset({"name": "mnist5k", "heldout": 100, "train_images": 128})


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_different_seed_different(splits, tmp_path):
    m1, metrics = train_model("small_cnn", splits, CFG, 5, tmp_path / "a.pt", "a", progress=False)
    m2, _ = train_model("small_cnn", splits, CFG, 5, tmp_path / "b.pt", "b", progress=False)
    m3, _ = train_model("small_cnn", splits, CFG, 6, tmp_path / "c.pt", "c", progress=False)
    assert _same(_weights(m1), _weights(m2))
    assert not _same(_weights(m1), _weights(m3))
    assert len(metrics["history"]) == 2 and 0 <= metrics["heldout_accuracy"] <= 1


def test_killed_job_resumes_from_last_epoch_to_identical_weights(splits, tmp_path, monkeypatch):
    reference, _ = train_model("small_cnn", splits, CFG, 3, tmp_path / "ref.pt", "run", progress=False)

    real_save = training.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt("job killed after its first epoch's checkpoint")

    resume = tmp_path / "resume.pt"
    monkeypatch.setattr(training, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_model("small_cnn", splits, CFG, 3, resume, "run", progress=False)
    monkeypatch.setattr(training, "atomic_save", real_save)
    assert torch.load(resume, weights_only=False)["epoch"] == 1

    epochs_run = []
    real_evaluate = training.evaluate
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: epochs_run.append(1) or real_evaluate(*a, **k))
    resumed, metrics = train_model("small_cnn", splits, CFG, 3, resume, "run", progress=False)
    assert len(epochs_run) == 1  # only the second epoch was trained again
    assert _same(_weights(resumed), _weights(reference))
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_resume_file_of_other_settings_is_ignored(splits, tmp_path):
    resume = tmp_path / "resume.pt"
    train_model("small_cnn", splits, {**CFG, "epochs": 1}, 3, resume, "old-settings", progress=False)
    fresh, _ = train_model("small_cnn", splits, CFG, 3, tmp_path / "fresh.pt", "new", progress=False)
    continued, _ = train_model("small_cnn", splits, CFG, 3, resume, "new", progress=False)
    assert _same(_weights(fresh), _weights(continued))


def test_checkpoint_round_trip(splits, tmp_path):
    model, metrics = train_model("small_cnn", splits, {**CFG, "epochs": 1}, 0, tmp_path / "r.pt", "x", progress=False)
    training.atomic_save(training.checkpoint_payload(model, "small_cnn", splits, 0, metrics), tmp_path / "m.pt")
    loaded, record = load_checkpoint(tmp_path / "m.pt")
    assert _same(_weights(loaded), _weights(model))
    assert record["architecture"] == "small_cnn" and record["seed"] == 0
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a convergent checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ddp.pt")
    fresh = build_model("small_cnn", 1, 10, 28)
    fit_state_dict(fresh, read_state_dict(tmp_path / "ddp.pt"), "ddp.pt", "small_cnn")  # DDP prefix stripped
    assert _same(_weights(fresh), _weights(model))


def test_any_source_trains_and_grey_images_fill_the_first_layers_channels(splits, tmp_path):
    """A torchvision ResNet expects 3 channels; MNIST's grey images are repeated into them."""
    cfg = {"torchvision": "resnet18", "kwargs": {"zero_init_residual": True}}
    model, metrics = train_model(cfg, splits, {**CFG, "epochs": 1}, 0, tmp_path / "r.pt", "tv", progress=False)
    assert model.conv1.in_channels == 3
    assert metrics["architecture"] == "torchvision:resnet18" and 0 <= metrics["heldout_accuracy"] <= 1
    payload = training.checkpoint_payload(model, cfg, splits, 0, metrics)
    training.atomic_save(payload, tmp_path / "m.pt")
    loaded, record = load_checkpoint(tmp_path / "m.pt")  # rebuilt from the payload's model section
    assert _same(_weights(loaded), _weights(model)) and record["model"]["torchvision"] == "resnet18"


def test_progress_counts_batches_over_all_epochs_and_prints_each_epoch(splits, tmp_path, capsys):
    from support.progress import Recorder

    seen = Recorder()
    train_model("small_cnn", splits, CFG, 0, tmp_path / "p.pt", "p", progress=seen)
    seen.check(CFG["epochs"] * 4)  # 128 training images in batches of 32
    epochs = [line for line in capsys.readouterr().err.splitlines() if "epoch" in line]
    assert len(epochs) == CFG["epochs"] and epochs[-1].startswith("train seed 0: epoch 2/2, loss ")

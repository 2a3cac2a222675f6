"""Faults in data (issue 16): non-finite values stop the job where they arise, and damaged files
are named with the kind of damage and what to do, read through the real loaders."""

import json

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from convergent.activations import iter_sample_chunks, read_input_means, read_samples
from convergent.checkpoints import CheckpointError, load_payload
from convergent.correlation import LayerStats
from convergent.data import load_dataset
from convergent.extraction import extract_activations
from convergent.integrity import DamagedFileError, NonFiniteError, check_finite
from convergent.models import build_model, load_checkpoint, load_model
from convergent.training import atomic_save, checkpoint_payload, train_model

CFG = dict(epochs=2, batch_size=32, optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4,
           milestones=[1], gamma=0.1, augment="none", device="cpu", amp=False, num_workers=0)
EXTRACT = {"positions_per_image": 3, "position_seed": 1, "top_k": 2, "batch_size": 4, "dtype": "float32"}


@pytest.fixture(scope="module")
def splits():
    return load_dataset({"name": "mnist5k", "heldout": 40, "train_images": 96})


def _extract(model, path, n=8, dtype="float32", layers=("conv1", "fc1")):
    images = torch.randn(n, 1, 28, 28)
    extract_activations(model, TensorDataset(images, torch.zeros(n)), np.arange(n), list(layers), path,
                        {**EXTRACT, "dtype": dtype}, {"seed": 4, "architecture": "small_cnn"}, 1, 28,
                        torch.device("cpu"), progress=False)


@pytest.fixture(scope="module")
def activation_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("act") / "results" / "x" / "activations" / "seed4.h5"
    _extract(build_model("small_cnn", 1, 10, 28).eval(), path)
    return path


# -- non-finite values -------------------------------------------------------------------------

def test_diverging_training_stops_at_the_first_nan_loss_and_keeps_the_last_good_epoch(splits, tmp_path):
    resume = tmp_path / "models" / ".resume" / "seed3.pt"
    train_model("small_cnn", splits, {**CFG, "epochs": 1}, 3, resume, "run", progress=False)
    good = torch.load(resume, weights_only=False)
    # the run goes on at a learning rate that diverges (set in the optimizer's saved state, which a
    # resumed run restores): epoch 2 must fail, and epoch 1's state stay as it was
    diverging = torch.load(resume, weights_only=False)
    diverging["optimizer"]["param_groups"][0]["lr"] = 1e6
    torch.save(diverging, resume)
    with pytest.raises(NonFiniteError) as caught:
        train_model("small_cnn", splits, {**CFG, "epochs": 3}, 3, resume, "run", progress=False)
    message = str(caught.value)
    assert "seed 3" in message and "epoch 2 of 3" in message and "batch " in message
    assert "learning rate 1e+06" in message and "'train.lr'" in message
    assert f"after epoch 1 is kept in {resume}" in message
    kept = torch.load(resume, weights_only=False)
    assert kept["epoch"] == 1 and kept["optimizer"]["param_groups"][0]["lr"] == 1e6
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])


def test_diverging_from_scratch_says_nothing_was_kept(splits, tmp_path):
    with pytest.raises(NonFiniteError, match=r"seed 0: training loss is (nan|inf).* epoch 1 of 1, batch \d+ .*"
                                             r"No epoch completed"):
        train_model("small_cnn", splits, {**CFG, "lr": 1e8, "epochs": 1}, 0, tmp_path / "r.pt", "x", progress=False)
    assert not (tmp_path / "r.pt").exists()


def test_extraction_refuses_a_network_with_nan_weights(tmp_path):
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10, 28).eval()
    with torch.no_grad():
        model.classifier.fc1.weight[3, 0] = float("nan")  # fc1's unit 3 only
    path = tmp_path / "seed4.h5"
    with pytest.raises(NonFiniteError) as caught:
        _extract(model, path)
    message = str(caught.value)
    assert str(path) in message and "small_cnn seed 4" in message and "probe inputs 0-3 of 8" in message
    assert "fc1: 1 of " in message and "conv1" not in message and "No activation file was written" in message
    assert not path.exists() and not list(tmp_path.iterdir())  # no temporary left either


def test_extraction_refuses_values_float16_cannot_hold(tmp_path):
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10, 28).eval()
    with torch.no_grad():
        model.features.conv1.bias.fill_(1e5)  # finite in float32, inf in float16
    with pytest.raises(NonFiniteError, match=r"conv1: \d+ of \d+ units beyond float16's range .*'extract.dtype'"):
        _extract(model, tmp_path / "seed4.h5", dtype="float16")


def test_readers_name_the_file_and_layer_of_non_finite_activations(activation_file, tmp_path):
    broken = tmp_path / "seed5.h5"
    broken.write_bytes(activation_file.read_bytes())
    with h5py.File(broken, "r+") as h5:
        samples = h5["layers/conv1/samples"]
        values = samples[()]
        values[7, [1, 2]] = [np.nan, np.inf]
        samples[...] = values
    with pytest.raises(NonFiniteError) as caught:
        read_samples(broken, "conv1")
    message = str(caught.value)
    assert f"{broken}, layer 'conv1'" in message and "2 non-finite values (NaN 1, inf 1) in 2 of" in message
    assert "first in row 7" in message
    with pytest.raises(NonFiniteError, match="first in row 7"):
        for _ in iter_sample_chunks(broken, "conv1", chunk_rows=5):
            pass
    read_samples(broken, "fc1")  # the other layer is fine
    np.testing.assert_array_equal(read_samples(broken, "conv1", rows=np.array([0, 20])),
                                  read_samples(activation_file, "conv1", rows=np.array([0, 20])))


def test_check_finite_against_a_loop():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20, 6))
    values[rng.random(values.shape) < 0.1] = np.nan
    units = sum(any(not np.isfinite(values[r, u]) for r in range(20)) for u in range(6))
    count = sum(not np.isfinite(v) for v in values.ravel())
    with pytest.raises(NonFiniteError, match=rf"{count} non-finite values .* in {units} of 6 units"):
        check_finite(values, "f.h5", "l")
    assert check_finite(np.ones((2, 2)), "f.h5", "l") is not None


# -- damaged files ---------------------------------------------------------------------------

def test_truncated_activation_file_is_named_with_the_command_that_remakes_it(activation_file, tmp_path):
    out = tmp_path / "results" / "x" / "activations"
    out.mkdir(parents=True)
    data = activation_file.read_bytes()
    truncated = out / "seed0.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedFileError) as caught:
        read_samples(truncated, "conv1")
    message = str(caught.value)
    assert f"activation file {truncated} is damaged: truncated: {len(data) // 2} of its {len(data)} bytes" in message
    assert f"snakemake --forcerun {truncated}" in message

    not_hdf5 = out / "seed1.h5"
    not_hdf5.write_text("<html>proxy error</html>")
    with pytest.raises(DamagedFileError, match=r"not an HDF5 file \(it starts with b'<html>pr'\)"):
        read_input_means(not_hdf5, "conv1")


def test_corrupt_data_inside_an_intact_file_is_named(tmp_path):
    path = tmp_path / "seed0.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["layers"] = ["conv1"]
        h5.create_dataset("layers/conv1/samples", data=np.random.default_rng(0).normal(size=(4000, 8)),
                          chunks=(500, 8), compression="gzip")
        offset = h5["layers/conv1/samples"].id.get_chunk_info(3).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 64] = b"\0" * 64  # a chunk overwritten: the header is fine, the data is not
    path.write_bytes(bytes(raw))
    with pytest.raises(DamagedFileError, match=rf"activation file {path} is damaged: cannot read its data"):
        read_samples(path, "conv1")


def test_damaged_statistics_file_is_named(tmp_path):
    path = tmp_path / "conv1.h5"
    path.write_bytes(b"")
    with pytest.raises(DamagedFileError, match=rf"statistics file {path} is damaged: empty"):
        LayerStats.load(path)


def test_truncated_and_foreign_checkpoints_are_named(splits, tmp_path):
    model, metrics = train_model("small_cnn", splits, {**CFG, "epochs": 1}, 0, tmp_path / "r.pt", "x", progress=False)
    models = tmp_path / "results" / "x" / "models"
    whole = models / "seed0.pt"
    atomic_save(checkpoint_payload(model, "small_cnn", splits, 0, metrics), whole)
    data = whole.read_bytes()
    cut = models / "seed1.pt"
    cut.write_bytes(data[: len(data) - 200])
    with pytest.raises(CheckpointError, match=rf"checkpoint {cut} is damaged \(truncated, {len(data) - 200} bytes: "
                                              rf".*snakemake --forcerun {cut}"):
        load_checkpoint(cut)
    text = tmp_path / "mine.pt"
    text.write_text("not weights")
    with pytest.raises(CheckpointError, match=r"mine.pt is damaged \(not a torch checkpoint.*replace it with an intact"):
        load_payload(text)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.safetensors is damaged \(empty, 0 bytes"):
        load_payload(empty)


def test_checkpoint_that_does_not_fit_the_model_names_the_keys(splits, tmp_path):
    model, metrics = train_model("small_cnn", splits, {**CFG, "epochs": 1}, 0, tmp_path / "r.pt", "x", progress=False)
    payload = checkpoint_payload(model, "small_cnn", splits, 0, metrics)
    state = payload["state_dict"]
    state["extra.weight"] = torch.zeros(2)
    del state["features.conv1.bias"]
    state["classifier.fc1.weight"] = torch.zeros(3, 3)
    atomic_save(payload, tmp_path / "seed0.pt")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "seed0.pt")
    message = str(caught.value)
    assert "1 missing keys ['features.conv1.bias']" in message and "1 unexpected keys ['extra.weight']" in message
    assert "classifier.fc1.weight: checkpoint [3, 3] vs model" in message
    with pytest.raises(CheckpointError, match=r"config key 'checkpoints.0'"):
        load_model({"architecture": "small_cnn"}, splits.geometry, checkpoint=tmp_path / "seed0.pt",
                   checkpoint_key="checkpoints.0")


def test_damaged_resume_file_costs_a_fresh_start_not_a_failure(splits, tmp_path, capsys):
    resume = tmp_path / "resume.pt"
    resume.write_bytes(b"PK\x03\x04 cut short")
    fresh, _ = train_model("small_cnn", splits, {**CFG, "epochs": 1}, 2, tmp_path / "other.pt", "y", progress=False)
    model, _ = train_model("small_cnn", splits, {**CFG, "epochs": 1}, 2, resume, "y", progress=False)
    assert f"resume file {resume} is damaged" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


# -- provenance --------------------------------------------------------------------------------

def test_outputs_record_the_environment(splits, activation_file, tmp_path):
    _, metrics = train_model("small_cnn", splits, {**CFG, "epochs": 1}, 0, tmp_path / "r.pt", "x", progress=False)
    env = metrics["environment"]
    assert env["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert env["packages"]["numpy"] == np.__version__ and env["device"] == "cpu"
    assert env["torch"]["deterministic_algorithms"] is True and env["python"]
    json.dumps(metrics)  # the model JSON holds it
    with h5py.File(activation_file, "r") as h5:
        recorded = json.loads(h5.attrs["environment"])
    assert recorded["packages"]["h5py"] == h5py.__version__ and recorded["cpu"]


# -- a writer killed mid-write --------------------------------------------------------------------

WRITER = """
import sys, time
import h5py, numpy as np
from convergent.outputs import atomic_output

path, version, stall = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "stall"
with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
    h5.attrs["version"] = version
    for block in range(4):
        h5.create_dataset(f"block{block}", data=np.full((256, 256), version, dtype=np.float32))
        h5.flush()
        if stall and block == 1:
            print("half written", flush=True)
            time.sleep(600)
"""


def _writer(path, version, stall):
    import os
    import subprocess
    import sys

    from conftest import SRC

    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(version), "stall" if stall else "finish"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})


def test_a_writer_killed_mid_write_leaves_nothing_taken_for_finished_and_loses_nothing(tmp_path):
    import signal

    from convergent.outputs import file_digest, recorded_checksum
    from convergent.verify import verify_results

    out = tmp_path / "results" / "x" / "stats"
    path = out / "conv1.h5"
    # first run: killed (SIGKILL: no handler, no cleanup) half-way through its file
    writer = _writer(path, 1, stall=True)
    assert writer.stdout.readline().strip() == "half written"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert not path.exists() and recorded_checksum(path) is None
    left = [p.name for p in out.iterdir()]
    assert left == [f".conv1.h5.tmp{writer.pid}.h5"]  # hidden, and never the output's name
    problems, checked = verify_results(tmp_path / "results" / "x")
    assert checked == 0 and [p.message.split(" (")[0] for p in problems] == ["temporary file left by a killed job"]

    # the rerun finishes; then a second version is killed while it is written over the first
    assert _writer(path, 1, stall=False).wait() == 0
    with h5py.File(path, "r") as h5:
        assert h5.attrs["version"] == 1 and h5["block3"][0, 0] == 1
    first = file_digest(path)
    assert recorded_checksum(path) == first
    writer = _writer(path, 2, stall=True)
    assert writer.stdout.readline().strip() == "half written"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert file_digest(path) == first == recorded_checksum(path)  # the finished file is untouched
    with h5py.File(path, "r") as h5:
        assert h5.attrs["version"] == 1


def test_statistics_with_non_finite_moments_are_named(tmp_path):
    from convergent.correlation import LayerStats

    n = 3
    corr = np.eye(2 * n)
    stats = LayerStats("conv1", np.array([0, 1]), np.zeros((2, n)), np.ones((2, n)), corr, corr,
                       np.zeros((2, n), bool), 10)
    stats.mean[1, 2] = np.nan
    stats.save(tmp_path / "conv1.h5")
    with pytest.raises(NonFiniteError, match=r"conv1.h5, layer 'conv1': 1 non-finite value .* of the means"):
        LayerStats.load(tmp_path / "conv1.h5")


def test_correlate_names_a_truncated_activation_file(activation_file, tmp_path):
    from types import SimpleNamespace

    from convergent.steps.correlate import main as correlate

    out = tmp_path / "results" / "x"
    (out / "activations").mkdir(parents=True)
    whole, cut = out / "activations" / "seed0.h5", out / "activations" / "seed1.h5"
    whole.write_bytes(activation_file.read_bytes())
    cut.write_bytes(activation_file.read_bytes()[:-500])
    params = SimpleNamespace(layer="conv1", seeds=[0, 1], cfg={"chunk_rows": 1000, "device": "cpu"})
    with pytest.raises(DamagedFileError, match=rf"activation file {cut} is damaged: truncated.*--forcerun {cut}"):
        correlate(SimpleNamespace(activations=[str(whole), str(cut)]), SimpleNamespace(stats=out / "stats" / "conv1.h5"),
                  params, None)
    assert not (out / "stats").exists()


def test_a_rerun_removes_what_killed_writers_left_and_nothing_else(tmp_path):
    from convergent.outputs import remove_stale_temporaries

    out = tmp_path / "matching" / "conv1"
    out.mkdir(parents=True)
    left = [out / ".0-1.csv.tmp4242.csv", out / ".0-1.csv.sha256.tmp4242"]
    kept = [out / "0-1.csv", out / ".0-1.csv.sha256", out / ".0-2.csv.tmp4242.csv", out / ".0-1.csv.tmp4242.csv.bak"]
    for path in left + kept:
        path.write_text("x")
    assert sorted(remove_stale_temporaries(out / "0-1.csv")) == sorted(left)
    assert sorted(out.iterdir()) == sorted(kept)
    assert remove_stale_temporaries(tmp_path / "nowhere" / "t.csv") == []

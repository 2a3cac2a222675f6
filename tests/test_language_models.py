"""Language models: the huggingface model source, probe text, token rows, offline.

Tiny random-weight BERT and GPT-NeoX families (tests/support/language_models.py) are written with
``save_pretrained``, with a tokenizer trained by the ``tokenizers`` library, and read back through
the real loaders, as a hub download would be.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest

pytest.importorskip("transformers", reason="the [text] extra (transformers) is not installed")

from support.language_models import family, sentences, write_text  # noqa: E402

from convergent.architectures import LayerSpec  # noqa: E402
from convergent.huggingface import HuggingFaceError, layer_specs, load_tokenizer, split_revision  # noqa: E402
from convergent.text import (TextProbeError, check_same_tokens, encode, load_text_probe, read_passages,  # noqa: E402
                             sample_token_positions, token_context)

EXTRACT = {"dtype": "float32", "batch_size": 8, "positions_per_image": 4, "position_seed": 0, "top_k": 4}


def model_cfg(directory, layers):
    return {"huggingface": str(directory), "revision": None, "tokenizer": None, "kwargs": {}, "weights": None,
            "layers": layers}


def text_cfg(path, **extra):
    return {"name": "text", "path": str(path), "probe_passages": 20, "max_length": 24, "probe_seed": 0,
            "text_field": "text", **extra}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return {"bert": family(root, "bert"), "neox": family(root, "neox"), "text": write_text(root / "probe.txt"),
            "root": root}


# ----------------------------------------------------------------------------------------------
# Probe text


def test_passages_from_lines_and_json_lines(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\n  \nthree four\n")
    assert read_passages({"path": str(tmp_path / "a.txt")}) == ["one two", "three four"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "x y"}) + "\n" + json.dumps({"body": "z"}) + "\n")
    assert read_passages({"path": str(tmp_path / "b.jsonl"), "text_field": "body"}) == ["x y", "z"]
    with pytest.raises(TextProbeError, match=r"line 1: no field 'text'.*dataset.text_field"):
        read_passages({"path": str(tmp_path / "b.jsonl")})


def test_missing_and_empty_text_files_are_named(tmp_path):
    with pytest.raises(TextProbeError, match=r"dataset.path.*nowhere.txt does not exist"):
        read_passages({"path": str(tmp_path / "nowhere.txt")})
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(TextProbeError, match="holds no passages"):
        read_passages({"path": str(tmp_path / "empty.txt")})


def test_passages_from_a_datasets_builder_with_local_files(families, tmp_path):
    pytest.importorskip("datasets", reason="the [text] extra (datasets) is not installed")
    texts = sentences(30, seed=3)
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"content": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    cfg = {"hub": "json", "data_files": str(path), "split": "train", "text_field": "content", "min_words": 8}
    assert read_passages(cfg) == [t for t in texts if len(t.split()) >= 8]
    probe = load_text_probe({**text_cfg(None), "path": None, **cfg, "probe_passages": 10},
                            load_tokenizer(str(families["bert"][0])))
    assert len(probe) == 10 and set(probe.passages) <= set(texts)
    with pytest.raises(TextProbeError, match=r"'dataset.text_field'.*no column 'body'.*\['content', 'id'\]"):
        read_passages({**cfg, "text_field": "body"})
    with pytest.raises(TextProbeError, match=r"'dataset.path' and 'dataset.hub': give one"):
        read_passages({**cfg, "path": str(path)})


def test_passages_from_a_dataset_saved_to_disk_and_an_uncached_hub_id(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the [text] extra (datasets) is not installed")
    texts = sentences(12, seed=4)
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": texts + ["", "  "]}),
                          "train": datasets.Dataset.from_dict({"text": ["other"]})}).save_to_disk(str(saved))
    cfg = {"hub": str(saved), "split": "test", "text_field": "text", "hub_config": None, "data_files": None}
    assert read_passages(cfg) == texts  # blank rows skipped
    with pytest.raises(TextProbeError, match=r"'dataset.split'.*no split 'validation' \(it has \['test', 'train'\]\)"):
        read_passages({**cfg, "split": "validation"})
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read at import: no network tries
    with pytest.raises(TextProbeError, match=r"dataset 'nobody-here/no-such-corpus'.*could not be loaded.*HF_HOME"):
        read_passages({**cfg, "hub": "nobody-here/no-such-corpus"})


def test_token_positions_avoid_padding_and_special_tokens_and_are_reproducible():
    rng = np.random.default_rng(0)
    valid = np.zeros((6, 12), dtype=bool)
    for i, n in enumerate(rng.integers(5, 11, size=6)):
        valid[i, 1:n] = True  # [CLS] at 0 and padding after n: never sampled
    rows = sample_token_positions("hidden_states.3", valid, 4, seed=5)
    assert rows.shape == (24, 3) and valid[rows[:, 0], rows[:, 1]].all()
    assert all(len(set(rows[rows[:, 0] == i, 1])) == 4 for i in range(6))
    np.testing.assert_array_equal(rows, sample_token_positions("hidden_states.3", valid, 4, seed=5))
    assert not np.array_equal(rows, sample_token_positions("hidden_states.4", valid, 4, seed=5))


def test_passages_shorter_than_the_positions_asked_for_are_an_error():
    valid = np.ones((3, 10), dtype=bool)
    valid[1, 2:] = False
    with pytest.raises(TextProbeError, match=r"1 of 3 probe passages.*positions_per_image = 4.*passage 1 with 2.*"
                                             r"max_length"):
        sample_token_positions("x", valid, 4, seed=0)


def test_first_token_is_cls_for_bert_and_the_first_real_token_for_causal_models():
    from convergent.text import first_token_positions

    # BERT: [CLS] a b [SEP] [PAD]; right padding, CLS first.
    ids, mask, special = [[101, 7, 8, 102, 0]], [[1, 1, 1, 1, 0]], [[1, 0, 0, 1, 1]]
    assert first_token_positions(np.array(ids), np.array(mask), np.array(special), 101).tolist() == [0]
    # Causal, left-padded, a BOS (50) first: the first real token is after both.
    ids, mask, special = [[0, 0, 50, 7, 8], [50, 9, 7, 0, 0]], [[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]], \
        [[1, 1, 1, 0, 0], [1, 0, 0, 1, 1]]
    assert first_token_positions(np.array(ids), np.array(mask), np.array(special), None).tolist() == [3, 1]
    # A tokenizer with a CLS token that does not lead the passage: the first real token still.
    assert first_token_positions(np.array(ids), np.array(mask), np.array(special), 101).tolist() == [3, 1]


def test_first_token_pooling_is_refused_for_image_maps(tmp_path):
    from convergent.activations import read_input_rows

    path = tmp_path / "image.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("layers/conv1")
        group.create_dataset("samples", data=np.ones((4, 2), dtype=np.float32))
        group.create_dataset("positions", data=np.zeros((4, 3), dtype=np.int64))
        group.create_dataset("input_mean", data=np.ones((2, 2), dtype=np.float32))
        group.attrs["kind"] = "spatial"
        h5.create_dataset("layers/fc1/samples", data=np.arange(6.0).reshape(3, 2))
        h5["layers/fc1"].attrs["kind"] = "vector"
    with pytest.raises(ValueError, match=r"no first-token rows.*first-token pooling is for probe text.*pooling: mean"):
        read_input_rows(path, "conv1", "first")
    np.testing.assert_array_equal(read_input_rows(path, "fc1", "first"), np.arange(6.0).reshape(3, 2))


def test_token_context_marks_the_token_and_leaves_out_padding():
    tokens = ["[CLS]", "the", "cat", "sat", "[SEP]", None, None]
    assert token_context(tokens, 2, 1) == "the [cat] sat"
    assert token_context(tokens, 4, 2) == "cat sat [[SEP]]"


def test_tokenizers_that_disagree_name_the_first_passage(families):
    bert = load_tokenizer(str(families["bert"][0]))
    gpt = load_tokenizer(str(families["neox"][0]))
    assert gpt.pad_token == gpt.eos_token  # Pythia-style: padded with EOS
    check_same_tokens(bert, load_tokenizer(str(families["bert"][1])), sentences(), 24, "seed 1")
    with pytest.raises(TextProbeError, match=r"tokenizes the probe text differently.*first at passage 0"):
        check_same_tokens(bert, gpt, sentences(), 24, "the tokenizer of seed 1")


def test_probe_text_excludes_padding_and_special_tokens(families):
    tokenizer = load_tokenizer(str(families["bert"][0]))
    probe = load_text_probe(text_cfg(families["text"]), tokenizer)
    encoded = encode(tokenizer, probe.passages, 24)
    specials = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    assert not np.isin(probe.input_ids[probe.valid], list(specials)).any()
    assert (probe.valid <= (encoded["attention_mask"] == 1)).all()
    with_specials = load_text_probe(text_cfg(families["text"], special_tokens=True), tokenizer)
    assert (with_specials.valid == (encoded["attention_mask"] == 1)).all()


# ----------------------------------------------------------------------------------------------
# The model source


def test_hidden_state_names_read_the_model_output():
    specs = layer_specs([LayerSpec("hidden_states.2", "hidden_states.2"), LayerSpec("mlp", "encoder.layer.1")], 2)
    assert specs[0] == LayerSpec("hidden_states.2", "", ("hidden_states", 2), "NTC")
    assert specs[1] == LayerSpec("mlp", "encoder.layer.1")
    assert [s.name for s in layer_specs(None, 2)] == ["hidden_states.0", "hidden_states.1", "hidden_states.2"]
    with pytest.raises(HuggingFaceError, match=r"hidden_states.5.*hidden_states.0 \(embeddings\) to hidden_states.2"):
        layer_specs([LayerSpec("hidden_states.5", "hidden_states.5")], 2)


def test_revisions_split_from_hub_ids_not_from_directories(tmp_path):
    assert split_revision("EleutherAI/pythia-160m-seed1@step1000") == ("EleutherAI/pythia-160m-seed1", "step1000")
    assert split_revision("google/multiberts-seed_0", "main") == ("google/multiberts-seed_0", "main")
    odd = tmp_path / "a@b"
    odd.mkdir()
    assert split_revision(str(odd)) == (str(odd), None)


def test_without_transformers_the_error_names_the_extra(monkeypatch):
    from convergent import huggingface

    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as when not installed
    with pytest.raises(HuggingFaceError, match=r"pip install 'convergent\[text\]'"):
        huggingface.import_transformers()


def test_a_directory_without_a_model_and_an_uncached_hub_id_are_named(tmp_path, monkeypatch):
    from convergent.models import load_model

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: no network tries
    (tmp_path / "empty").mkdir()
    cfg = model_cfg(tmp_path / "empty", None)
    with pytest.raises(HuggingFaceError, match=r"directory .*empty holds no loadable model configuration"):
        load_model(cfg, (0, None, 24), pretrained=False)
    cfg = model_cfg("nobody-here/no-such-model", None)
    with pytest.raises(HuggingFaceError, match=r"'nobody-here/no-such-model' could not be loaded.*HF_HOME"):
        load_model(cfg, (0, None, 24), pretrained=False)


@pytest.mark.parametrize("kind,module_layer", [("bert", "encoder.layer.1.intermediate"), ("neox", "layers.1.mlp.act")])
def test_seeds_import_and_extract_paired_token_rows(families, tmp_path, kind, module_layer):
    """Through the real loaders: import two seeds and an untrained one, extract a residual-stream
    and an MLP layer; rows pair across networks (same positions, same token ids), padding and
    special tokens never appear in them, and the values are the model's own hidden states."""
    import torch

    from convergent.language_models import import_seed, untrained_seed
    from convergent.models import load_model
    from convergent.text_extraction import extract_text_activations
    from convergent.training import atomic_save

    seeds = families[kind]
    cfg = model_cfg(seeds[0], ["hidden_states.2", module_layer])
    data = text_cfg(families["text"])
    tokenizer = load_tokenizer(str(seeds[0]))
    probe = load_text_probe(data, tokenizer)
    files = {}
    for name, make in (("seed1", lambda: import_seed(cfg, data, str(seeds[1]), 1)[:2]),
                       ("seed2", lambda: import_seed(cfg, data, str(seeds[2]), 2)[:2]),
                       ("untrained7", lambda: untrained_seed(cfg, data, 7))):
        payload, metrics = make()
        assert metrics["trained"] == (name != "untrained7") and "hf_config" in payload
        atomic_save(payload, tmp_path / f"{name}.pt")
        loaded = load_model(cfg, probe.geometry, checkpoint=tmp_path / f"{name}.pt", probes=True,
                            probe_inputs=probe.batch(0, 3))
        assert list(loaded.probes) == ["hidden_states.2", module_layer]
        files[name] = tmp_path / f"{name}.h5"
        extract_text_activations(loaded.module, probe, loaded.probes, files[name], EXTRACT, {"seed": 0},
                                 torch.device("cpu"), progress=False)
    with h5py.File(files["seed1"]) as h5:
        valid = h5["probe/valid"][()]
        ids = h5["probe/token_ids"][()]
        for layer in ("hidden_states.2", module_layer):
            group = h5[f"layers/{layer}"]
            assert group.attrs["kind"] == "tokens" and tuple(group.attrs["shape"])[1:] == (24, 1)
            positions = group["positions"][()]
            assert valid[positions[:, 0], positions[:, 1]].all()  # no padding, no special token
            top = group["top_activations"][()]
            assert valid[top["image"], top["y"]].all()
    for other in ("seed2", "untrained7"):
        with h5py.File(files["seed1"]) as a, h5py.File(files[other]) as b:
            np.testing.assert_array_equal(a["probe/token_ids"][()], b["probe/token_ids"][()])
            for layer in ("hidden_states.2", module_layer):
                np.testing.assert_array_equal(a[f"layers/{layer}/positions"][()], b[f"layers/{layer}/positions"][()])
    # The rows are the model's hidden states at the sampled (passage, token) positions.
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(seeds[1]).eval()
    with torch.no_grad():
        states = reference(**probe.batch(0, len(probe)), output_hidden_states=True).hidden_states[2]
    with h5py.File(files["seed1"]) as h5:
        positions = h5["layers/hidden_states.2/positions"][()]
        samples = h5["layers/hidden_states.2/samples"][()]
        means = h5["layers/hidden_states.2/input_mean"][()]
    np.testing.assert_allclose(samples, states[positions[:, 0], positions[:, 1]].numpy(), rtol=1e-4, atol=1e-5)
    mask = torch.as_tensor(probe.valid)[..., None]
    np.testing.assert_allclose(means, ((states * mask).sum(1) / mask.sum(1)).numpy(), rtol=1e-4, atol=1e-5)
    assert ids.shape == (20, 24)
    # First-token rows: BERT's CLS (position 0); the causal model's first token that is neither
    # padding nor special (its tokenizer adds none here, and pads on the right: position 0 too).
    from convergent.activations import read_input_rows

    with h5py.File(files["seed1"]) as h5:
        first = h5["probe/first_token"][()]
        attention = h5["probe/attention_mask"][()]
    if kind == "bert":
        assert (first == 0).all() and (ids[:, 0] == tokenizer.cls_token_id).all()
    else:
        assert (first == 0).all() and attention[:, 0].all() and not np.isin(ids[:, 0], tokenizer.all_special_ids).any()
    np.testing.assert_allclose(read_input_rows(files["seed1"], "hidden_states.2", "first"),
                               states[torch.arange(len(probe)), torch.as_tensor(first)].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(read_input_rows(files["seed1"], "hidden_states.2", "mean"), means)
    # The similarity stage's per-passage rows follow similarity.pooling.
    from convergent import similarity as sim
    from convergent.network_similarity import compare_pair

    cfg = {"measures": ["linear_cka", "rsa"], "svcca_variance": 0.99, "rbf_sigma": 0.8, "subspace_eps": 0.5,
           "max_rows": 1000, "kernel_rows": 100, "permutations": 0, "seed": 0, "mutual_knn_k": 5,
           "standardize": False, "pooling": "first"}
    frame = compare_pair(str(files["seed1"]), str(files["seed2"]), ["hidden_states.2", module_layer], cfg,
                         "trained", "seed1", "seed2", log=lambda *_: None)
    cell = frame.query("scope == 'cross_layer' and measure == 'linear_cka' and layer_a == @module_layer "
                       "and layer_b == 'hidden_states.2'")["value"].item()
    assert cell == pytest.approx(sim.linear_cka(read_input_rows(files["seed1"], module_layer, "first"),
                                                read_input_rows(files["seed2"], "hidden_states.2", "first")), abs=1e-9)


def test_convergent_layers_lists_hidden_states_and_modules(families, tmp_path):
    import subprocess

    from conftest import REPO, SRC, write_config

    config = {"experiment": "cli", "seeds": [0, 1], "checkpoints": {"0": str(families["neox"][0]),
                                                                    "1": str(families["neox"][1])},
              "dataset": {"name": "text", "path": str(families["text"]), "max_length": 16},
              "model": {"huggingface": str(families["neox"][0])}}
    write_config(tmp_path, config)
    result = subprocess.run([sys.executable, "-m", "convergent", "layers", "--schema",
                             str(REPO / "workflow" / "schemas" / "config.schema.yaml")], cwd=tmp_path,
                            capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
                            timeout=600)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "input 16 tokens per passage" in out and "signs on 3 probe passages" in out
    defaults = [line.split()[1] for line in out.splitlines() if line.startswith("*  ")]
    assert defaults == ["hidden_states.0", "hidden_states.1", "hidden_states.2"]
    mlp = next(line for line in out.splitlines() if line.split() and line.split()[0] == "layers.1.mlp.act")
    assert "tokens" in mlp and "32x16x1" in mlp


def test_files_with_different_token_ids_are_not_paired(tmp_path):
    from convergent.activations import check_paired

    for name, ids in (("a", [[5, 6, 7]]), ("b", [[5, 6, 8]]), ("c", [[5, 6, 7]])):
        with h5py.File(tmp_path / f"{name}.h5", "w") as h5:
            h5.create_dataset("probe/image_index", data=[0])
            h5.create_dataset("probe/token_ids", data=np.array(ids))
            h5.create_dataset("layers/x/samples", data=np.zeros((2, 3)))
            h5.create_dataset("layers/x/positions", data=np.array([[0, 1, 0], [0, 2, 0]]))
    check_paired([tmp_path / "a.h5", tmp_path / "c.h5"], "x")
    with pytest.raises(ValueError, match="not paired.*token ids"):
        check_paired([tmp_path / "a.h5", tmp_path / "b.h5"], "x")

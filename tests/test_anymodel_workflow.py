"""The whole workflow on a model from outside the zoo: a small torchvision VisionTransformer on an
ImageNet-style folder of PNG files, one seed trained here and one imported from a .safetensors
file, probed at a spatial layer (the patch embedding) and a token layer (an encoder block), both
signed. Every analysis rule, figure and the report run once (shared by the tests here)."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import planned_jobs, snakemake, write_config
from convergent.activations import layer_attrs, read_image_index, read_positions

pytestmark = pytest.mark.workflow

VIT_KWARGS = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
LAYERS = ["conv_proj", "encoder.layers.encoder_layer_1"]
CLASSES = ("bars", "dots", "rings")


def write_image_folder(root, per_class: dict[str, int], side: int = 40, seed: int = 0) -> None:
    """``root/<split>/<class>/*.png``: RGB images whose class decides their pattern, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    patterns = {"bars": (np.sin(xx / 2.0) > 0), "dots": ((yy % 6 < 2) & (xx % 6 < 2)),
                "rings": (np.hypot(yy - side / 2, xx - side / 2).astype(int) % 8 < 3)}
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                base = patterns[name].astype(float)[..., None] * rng.uniform(0.4, 1.0, size=3)
                image = np.clip(base + rng.normal(0, 0.15, size=(side, side, 3)), 0, 1)
                Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"{name}_{i}.png")


def vit_config(workdir) -> dict:
    return {
        "experiment": "anyvit",
        "seeds": [0, 1],
        "untrained_seeds": [7],
        "checkpoints": {"1": str(workdir / "elsewhere" / "vit_seed1.safetensors")},
        "dataset": {"name": "imagefolder", "root": str(workdir / "images"), "image_size": 32, "probe_images": 24},
        "model": {"torchvision": "VisionTransformer", "kwargs": VIT_KWARGS, "layers": LAYERS},
        "train": {"epochs": 1, "batch_size": 10, "lr": 0.01},
        "extract": {"positions_per_image": 4, "top_k": 4, "batch_size": 64},
        "figures": {"formats": ["png"], "dpi": 60},
        "subspace": {"repeats": 2, "simple_eps": [0.5], "simple_pairs": "first", "restarts": 1},
    }


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("vit_run")
    write_image_folder(workdir / "images", {"train": 10, "val": 8})
    # Seed 1 was trained "elsewhere": its weights arrive as safetensors, saved from DataParallel.
    from safetensors.torch import save_file
    from torchvision.models import VisionTransformer

    torch.manual_seed(1)
    state = VisionTransformer(**VIT_KWARGS, num_classes=len(CLASSES)).state_dict()
    (workdir / "elsewhere").mkdir()
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()},
              str(workdir / "elsewhere" / "vit_seed1.safetensors"))
    configfile = write_config(workdir, vit_config(workdir))
    jobs = planned_jobs(workdir, configfile)
    assert jobs["train"] == 1 and jobs["import_checkpoint"] == 1 and jobs["untrained"] == 1
    snakemake(workdir, configfile=configfile, timeout=1800)
    result = snakemake(workdir, "--report", "results/report.html", configfile=configfile)
    assert "(ERROR/" not in result.stdout + result.stderr
    return workdir


def test_every_rule_ran_on_both_layers(vit_run):
    out = vit_run / "results" / "anyvit"
    assert (vit_run / "results" / "report.html").stat().st_size > 10_000
    for layer in LAYERS:
        for stem in ("li2016_fig1", "li2016_fig2", "li2016_fig3", "li2016_fig4", "li2016_fig5", "li2016_fig6",
                     "li2016_fig7", "li2016_fig12", "li2016_fig13"):
            figure = out / "figures" / f"{stem}_{layer}.png"
            assert figure.stat().st_size > 3000, figure
        assert (out / "stats" / f"{layer}.h5").exists()
        assert (out / "subspace" / layer / "0-1.h5").exists() and (out / "sparse" / layer / "0-1.csv").exists()
    for table in ("accuracy", "li2016_table1", "li2016_table2", "li2016_mi_vs_correlation", "wang2018_similarity"):
        assert (out / "tables" / f"{table}.csv").exists(), table
    assert not list(out.glob("**/.*.tmp*")), "temporary files left behind"


def test_kinds_signs_and_pairing_in_the_files(vit_run):
    acts = vit_run / "results" / "anyvit" / "activations"
    spatial = layer_attrs(acts / "seed0.h5", "conv_proj")
    tokens = layer_attrs(acts / "seed0.h5", "encoder.layers.encoder_layer_1")
    assert (spatial["kind"], tuple(spatial["shape"]), spatial["signed"]) == ("spatial", (32, 4, 4), True)
    assert tuple(spatial["receptive_field"]) == (8, 8, 0)
    assert (tokens["kind"], tuple(tokens["shape"]), tokens["signed"]) == ("tokens", (32, 17, 1), True)
    assert tuple(tokens["token_grid"]) == (1, 4, 4)
    for net in ("seed1", "untrained7"):
        np.testing.assert_array_equal(read_image_index(acts / "seed0.h5"), read_image_index(acts / f"{net}.h5"))
        for layer in LAYERS:
            np.testing.assert_array_equal(read_positions(acts / "seed0.h5", layer),
                                          read_positions(acts / f"{net}.h5", layer))


def test_signed_layers_get_mutual_information_without_a_zero_bin(vit_run):
    for layer in LAYERS:
        with np.load(vit_run / "results" / "anyvit" / "mi" / layer / "0-1.npz") as npz:
            assert not bool(npz["zero_bin"]) and np.isfinite(npz["mi"]).any()
    log = (vit_run / "results" / "anyvit" / "logs" / "mutual_info" / LAYERS[1] / "0-1.log").read_text()
    assert "percentile bins only (signed layer)" in log


def test_imported_and_trained_networks(vit_run):
    import pandas as pd

    table = pd.read_csv(vit_run / "results" / "anyvit" / "tables" / "accuracy.csv")
    rows = table[table.network.str.startswith(("seed", "untrained"))]
    assert set(rows.network) == {"seed 0", "seed 1", "untrained 7"}
    assert set(rows.architecture) == {"torchvision:VisionTransformer"}
    log = (vit_run / "results" / "anyvit" / "logs" / "extract" / "seed1.log").read_text()
    assert "conv_proj (spatial [32, 4, 4], fx)" in log


def test_layer_edits_rerun_extraction_not_training(vit_run, tmp_path):
    config = vit_config(vit_run)
    config["model"]["layers"] = LAYERS[:1]
    jobs = planned_jobs(vit_run, write_config(tmp_path, config))
    assert "train" not in jobs and "import_checkpoint" not in jobs and jobs["extract"] == 3


SMALL_FACTORY = '''
from torch import nn


def small(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, num_classes))
'''


def test_editing_the_factory_file_reruns_what_it_builds(tmp_path):
    (tmp_path / "nets.py").write_text(SMALL_FACTORY)
    config = {"experiment": "fac", "seeds": [0, 1],
              "dataset": {"name": "mnist5k", "heldout": 200, "probe_images": 20, "train_images": 100},
              "model": {"factory": "nets.py:small", "layers": ["0", "1"]}, "train": {"epochs": 1}}
    configfile = write_config(tmp_path, config)
    target = "results/fac/activations/seed0.h5"
    snakemake(tmp_path, target, configfile=configfile)
    acts = tmp_path / target
    assert layer_attrs(acts, "0")["signed"] and not layer_attrs(acts, "1")["signed"]  # conv, then its ReLU
    assert planned_jobs(tmp_path, configfile, target) == {}
    (tmp_path / "nets.py").write_text(SMALL_FACTORY + "\n# edited\n")
    assert planned_jobs(tmp_path, configfile, target) == {"train": 1, "extract": 1}


def test_an_unknown_layer_stops_the_workflow_before_any_job(tmp_path):
    config = {"experiment": "bad", "seeds": [0, 1], "dataset": {"name": "mnist5k"},
              "model": {"torchvision": "resnet18", "layers": ["layer1.0", "layer9"]}}
    result = snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config), check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and "'layer9' is not a layer of this model" in text
    assert "convergent layers" in text and "Traceback" not in text and not (tmp_path / "results").exists()

"""`convergent layers` (also `python -m convergent layers`) on a configured experiment."""

import subprocess
import sys

from conftest import REPO, SRC, write_config


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "convergent", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=600)


def test_help_lists_the_commands(tmp_path):
    result = _run("--help", cwd=tmp_path)
    assert result.returncode == 0 and "layers" in result.stdout


def test_layers_of_a_vision_transformer(tmp_path):
    config = {"experiment": "cli", "seeds": [0, 1],
              "dataset": {"name": "cifar10", "root": str(tmp_path / "absent"), "download": False},
              "model": {"torchvision": "VisionTransformer",
                        "kwargs": {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2,
                                   "hidden_dim": 32, "mlp_dim": 64}}}
    write_config(tmp_path, config)
    result = _run("layers", "--all-receptive-fields", "--schema",
                  str(REPO / "workflow" / "schemas" / "config.schema.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "torchvision:VisionTransformer: input 3x32x32; read through fx" in out
    assert "random initialisation" in out and "random inputs" in out  # no network, no dataset here
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line
             for line in out.splitlines() if line.strip()}
    assert "conv_proj" in lines and "spatial" in lines["conv_proj"] and "8 px, stride 8, offset 0" in lines["conv_proj"]
    block = next(line for line in out.splitlines() if "(= encoder.layers.encoder_layer_0)" in line)
    assert block.startswith("*") and "tokens" in block and "32x17x1" in block and "whole input" in block
    assert "not a tensor: probe with {layer: encoder.layers.encoder_layer_0.self_attention, output: 0}" in out
    assert "encoder.layers.encoder_layer_0.add" in lines and "heads.head" in lines


def test_layers_reports_a_bad_config(tmp_path):
    write_config(tmp_path, {"experiment": "cli", "seeds": [0, 1], "dataset": {"name": "mnist5k"},
                            "model": {"torchvision": "resnet51"}})
    result = _run("layers", "--schema", str(REPO / "workflow" / "schemas" / "config.schema.yaml"), cwd=tmp_path)
    assert result.returncode == 2 and "unknown model 'resnet51'" in result.stderr and "resnet50" in result.stderr

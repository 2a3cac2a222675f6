"""Config validation: every mistake is reported with the key and what is allowed."""


import pytest
import yaml

from conftest import REPO, snakemake, tiny_config, write_config
from convergent.config import ConfigError, validate

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_default_config_is_valid_and_defaults_are_filled():
    config = validate(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)
    assert config["train"]["device"] == "auto"  # not in config.yaml: from the schema
    assert config["extract"]["position_seed"] == 0
    assert config["figures"]["formats"] == ["pdf", "png"]


@pytest.mark.parametrize("preset", sorted((REPO / "workflow" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_are_valid(preset):
    validate(yaml.safe_load(preset.read_text()), SCHEMA)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["train"].update(epoch=3), ["'train'", "unknown key(s) ['epoch']", "epochs"]),
        (lambda c: c["train"].update(epochs="ten"), ["'train.epochs'", "'ten'", "wrong type", "integer"]),
        (lambda c: c["train"].update(epochs=0), ["'train.epochs'", "out of range", "[1, inf]"]),
        (lambda c: c["train"].update(momentum=1.5), ["'train.momentum'", "1.5", "[0, 1]"]),
        (lambda c: c["dataset"].update(name="imagenet"), ["'dataset.name'", "'imagenet'", "cifar10", "imagefolder"]),
        (lambda c: c.update(seeds=[0]), ["'seeds'"]),
        (lambda c: c["figures"].update(formats=["jpg"]), ["'figures.formats.0'", "'jpg'", "pdf"]),
        (lambda c: c.pop("model"), ["'model' is a required property"]),
    ],
)
def test_bad_config_names_key_and_allowed_values(edit, expected):
    config = tiny_config()
    edit(config)
    with pytest.raises(ConfigError) as error:
        validate(config, SCHEMA)
    for fragment in expected:
        assert fragment in str(error.value)


def test_all_problems_reported_at_once():
    config = tiny_config()
    config["train"]["epochs"] = -1
    config["extract"]["dtype"] = "float64"
    with pytest.raises(ConfigError, match=r"2 problem\(s\)") as error:
        validate(config, SCHEMA)
    assert "train.epochs" in str(error.value) and "extract.dtype" in str(error.value)


def test_snakemake_stops_before_any_job_on_bad_config(tmp_path):
    config = tiny_config()
    config["train"]["optimizer"] = "rmsprop"
    result = snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert "config key 'train.optimizer'" in result.stderr + result.stdout
    assert "['sgd', 'adam']" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_unknown_probe_layer_is_reported(tmp_path):
    config = tiny_config()
    config["model"]["layers"] = ["conv1", "conv9"]
    result = snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert "model.layers" in result.stderr + result.stdout and "conv9" in result.stderr + result.stdout


def test_first_token_pooling_on_images_is_refused_at_plan_time(tmp_path):
    """similarity.pooling: first is for probe text; on images the plan stops before any job."""
    config = tiny_config()
    config.setdefault("similarity", {})["pooling"] = "first"
    result = snakemake(tmp_path, "--dry-run", configfile=write_config(tmp_path, config), check=False)
    out = result.stderr + result.stdout
    assert result.returncode != 0
    assert "config key 'similarity.pooling'" in out and "pooling: mean" in out
    assert not (tmp_path / "results").exists()


def test_epsilon_has_one_name_and_one_default_in_config_and_library():
    """ε is `eps` in every section and library call, and each default is stated once: the
    schema's defaults are the library's."""
    import inspect

    from convergent.similarity import subspace_similarity
    from convergent.subspace import EPS_GRID

    properties = yaml.safe_load(SCHEMA.read_text())["properties"]
    assert properties["subspace"]["properties"]["eps"]["default"] == list(EPS_GRID)
    assert (properties["similarity"]["properties"]["subspace_eps"]["default"]
            == inspect.signature(subspace_similarity).parameters["eps"].default)
    names = {key for section in properties.values() for key in section.get("properties", {})}
    assert not {n for n in names if "epsilon" in n}, "ε is spelled `eps` in the config"

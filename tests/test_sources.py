"""Model sources (torchvision, timm, factories, pretrained weights) and checkpoints from anywhere,
each failure with its message; all offline, random weights."""

import importlib.util
import sys
import textwrap
import urllib.error

import pytest
import torch
from torch import nn

from convergent.checkpoints import CheckpointError, fit_state_dict, read_state_dict
from convergent.models import channel_adapter, expected_channels, load_model
from convergent.sources import ModelSourceError, weights_file

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed (optional extra [timm])")


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_torchvision_builder_with_kwargs_and_dataset_classes():
    model = load_model({"torchvision": "resnet18", "kwargs": {"zero_init_residual": True}}, (3, 7, 32)).module
    assert model.fc.out_features == 7
    assert float(model.layer1[0].bn2.weight.detach().abs().sum()) == 0.0  # the kwarg reached the builder
    model = load_model({"torchvision": "resnet18", "kwargs": {"num_classes": 5}}, (3, 7, 32)).module
    assert model.fc.out_features == 5  # the config's kwargs win


def test_same_seed_same_weights():
    a = load_model({"torchvision": "resnet18"}, (3, 10, 32), seed=3).module
    b = load_model({"torchvision": "resnet18"}, (3, 10, 32), seed=3).module
    c = load_model({"torchvision": "resnet18"}, (3, 10, 32), seed=4).module
    assert _same(a, b) and not _same(a, c)


def test_unknown_model_names_the_closest():
    with pytest.raises(ModelSourceError, match=r"model.torchvision.*unknown model 'resnet51'.*'resnet50'"):
        load_model({"torchvision": "resnet51"}, (3, 10, 32))
    with pytest.raises(ModelSourceError, match=r"model.weights.*'IMAGENET9K' is not a weights name.*'IMAGENET1K_V2'"):
        load_model({"torchvision": "resnet50", "weights": "IMAGENET9K"}, (3, 10, 32))


def test_bad_kwargs_are_named():
    with pytest.raises(ModelSourceError, match=r"does not accept the keyword arguments.*'widht'"):
        load_model({"torchvision": "resnet18", "kwargs": {"widht": 3}}, (3, 10, 32))


def test_grey_images_get_the_channels_the_first_layer_expects():
    loaded = load_model({"torchvision": "resnet18"}, (1, 10, 28))
    assert expected_channels(loaded.module) == 3
    grey = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.module(grey), loaded.module(grey.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="expects 1 input channels and the dataset gives 3"):
        channel_adapter(3, 1)


def test_pretrained_weights_offline_say_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ModelSourceError) as error:
        load_model({"torchvision": "resnet18", "weights": "DEFAULT"}, (3, 1000, 32))
    message = str(error.value)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in message and "TORCH_HOME" in message and "https://download.pytorch.org" in message
    # The file put there is used, without network; another class count gets a fresh head.
    torch.manual_seed(11)
    reference = load_model({"torchvision": "resnet18"}, (3, 1000, 32)).module
    expected.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), expected)
    assert weights_file("https://x/resnet18-f37072fd.pth") == expected
    same = load_model({"torchvision": "resnet18", "weights": "DEFAULT"}, (3, 1000, 32)).module
    assert _same(same, reference)
    tuned = load_model({"torchvision": "resnet18", "weights": "IMAGENET1K_V1"}, (3, 10, 32), seed=0).module
    assert tuned.fc.out_features == 10 and torch.equal(tuned.conv1.weight, reference.conv1.weight)
    # untrained baselines and rebuilt checkpoints never touch the weights
    assert not _same(load_model({"torchvision": "resnet18", "weights": "DEFAULT"}, (3, 1000, 32),
                                pretrained=False).module, reference)


@needs_timm
def test_timm_models():
    loaded = load_model({"timm": "resnet18", "kwargs": {"drop_rate": 0.1}}, (3, 10, 32), probes=True)
    assert loaded.module.get_classifier().out_features == 10
    assert list(loaded.probes)[:2] == ["layer1.0", "layer1.1"]
    with pytest.raises(ModelSourceError, match=r"unknown model 'resnet_18'.*'resnet18'"):
        load_model({"timm": "resnet_18"}, (3, 10, 32))


def test_missing_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ModelSourceError, match=r"pip install 'convergent\[timm\]'"):
        load_model({"timm": "resnet18"}, (3, 10, 32))


FACTORY = textwrap.dedent('''
    from torch import nn

    def small(num_classes, width=4):
        return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, num_classes))

    def fixed():
        return nn.Linear(3, 2)

    def text():
        return "not a module"
''')


def test_factories(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(FACTORY)
    model = load_model({"factory": f"{tmp_path}/mynets.py:small", "kwargs": {"width": 6}}, (3, 10, 16)).module
    assert model[0].out_channels == 6 and model[-1].out_features == 10
    fixed = load_model({"factory": f"{tmp_path}/mynets.py:fixed"}, (3, 10, 16)).module  # no num_classes taken
    assert fixed.out_features == 2
    monkeypatch.syspath_prepend(str(tmp_path))
    by_module = load_model({"factory": "mynets:small"}, (3, 4, 16)).module
    assert by_module[-1].out_features == 4
    monkeypatch.chdir(tmp_path)  # a relative file path is relative to the working directory
    assert load_model({"factory": "mynets.py:fixed"}, (3, 10, 16)).module.in_features == 3


@pytest.mark.parametrize("factory, message", [
    ("missing.py:build", r"no file .*missing.py"),
    ("broken.py:build", r"broken.py cannot be imported \(NameError"),
    ("mynets.py:smal", r"has no function 'smal'; closest names: \['small'\]"),
    ("mynets.py:text", r"returned a str, not a torch.nn.Module"),
    ("no_such_package.nets:build", r"module 'no_such_package.nets' cannot be imported"),
])
def test_bad_factories(tmp_path, monkeypatch, factory, message):
    (tmp_path / "mynets.py").write_text(FACTORY)
    (tmp_path / "broken.py").write_text("undefined_name\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSourceError, match=message):
        load_model({"factory": factory}, (3, 10, 16))


@pytest.fixture(scope="module")
def resnet():
    return load_model({"torchvision": "resnet18"}, (3, 10, 32), seed=1).module


@pytest.mark.parametrize("how", ["pt", "pth_nested", "safetensors", "ddp", "compiled", "lightning"])
def test_checkpoints_from_anywhere(resnet, tmp_path, how):
    state = resnet.state_dict()
    path = tmp_path / f"weights.{'safetensors' if how == 'safetensors' else 'pth' if how == 'pth_nested' else 'pt'}"
    if how == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif how == "pth_nested":
        torch.save({"epoch": 90, "model_state_dict": state, "optimizer": {"lr": 0.1}}, path)
    else:
        prefix = {"pt": "", "ddp": "module.", "compiled": "module._orig_mod.", "lightning": "model."}[how]
        torch.save({prefix + k: v for k, v in state.items()}, path)
    loaded = load_model({"torchvision": "resnet18"}, (3, 10, 32), seed=2, checkpoint=path).module
    assert _same(loaded, resnet)


def test_pickled_whole_modules_are_refused(resnet, tmp_path):
    torch.save(resnet, tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match=r"holds a whole pickled model \(torchvision.models.resnet.ResNet\).*"
                                              r"torch.save\(model.state_dict\(\)"):
        read_state_dict(tmp_path / "whole.pt")


def test_checkpoint_mismatch_names_the_keys(resnet, tmp_path):
    torch.save(resnet.state_dict(), tmp_path / "r18.pt")
    bigger = load_model({"torchvision": "resnet34"}, (3, 10, 32)).module
    with pytest.raises(CheckpointError) as error:
        load_model({"torchvision": "resnet34"}, (3, 10, 32), checkpoint=tmp_path / "r18.pt",
                   checkpoint_key="checkpoints.3")
    message = str(error.value)
    assert "(config key 'checkpoints.3') does not fit model 'torchvision:resnet34'" in message
    missing = sorted(set(bigger.state_dict()) - set(resnet.state_dict()) - {k for k in bigger.state_dict()
                                                                             if k.endswith("num_batches_tracked")})
    assert f"{len(missing)} missing keys" in message and "'layer1.2.conv1.weight'" in message and "more" in message
    other = load_model({"torchvision": "resnet18"}, (3, 4, 32)).module
    with pytest.raises(CheckpointError, match=r"2 keys of another shape \['fc.weight: checkpoint \[10, 512\] "
                                              r"vs model \[4, 512\]'"):
        fit_state_dict(other, resnet.state_dict(), "r18.pt", "resnet18 with 4 classes")
    extra = {**resnet.state_dict(), "head.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \['head.weight'\]"):
        fit_state_dict(load_model({"torchvision": "resnet18"}, (3, 10, 32)).module, extra, "x.pt", "resnet18")


def test_old_checkpoints_without_batch_norm_counters_load(resnet, tmp_path):
    state = {k: v for k, v in resnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    fresh = load_model({"torchvision": "resnet18"}, (3, 10, 32)).module
    fit_state_dict(fresh, state, "old.pt", "resnet18")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())

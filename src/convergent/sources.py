"""Networks from outside the zoo: torchvision builders, timm models, and user factories.

* ``torchvision: resnet50`` (any classification builder of ``torchvision.models``, or a model class
  it exports such as ``VisionTransformer``), with ``kwargs`` passed to it and ``weights``
  (``DEFAULT``, or a weights name such as ``IMAGENET1K_V2``) for pretrained ones;
* ``timm: convnext_tiny`` (needs the optional ``timm`` package: ``pip install 'convergent[timm]'``),
  ``weights: DEFAULT`` for timm's pretrained weights;
* ``factory: path/to/file.py:function`` or ``package.module:function``: any callable returning an
  ``nn.Module``, called with ``kwargs``.

``num_classes`` is the dataset's number of classes unless ``kwargs`` sets it (a factory gets it
only if it accepts it). Pretrained weights with another number of classes keep everything but the
classifier, which is replaced by a freshly initialised one. Every failure is a
:class:`ModelSourceError` that names the config key and what to do.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn


class ModelSourceError(ValueError):
    """The configured model cannot be built; the message says why and what to change."""


def closest(name: str, names, n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, list(names), n=n, cutoff=0.6)


def _unknown(source: str, name: str, names, extra: str = "") -> ModelSourceError:
    near = closest(name, names)
    hint = f"; closest names: {near}" if near else ""
    return ModelSourceError(f"config key 'model.{source}': unknown model {name!r}{hint}{extra}")


# ----------------------------------------------------------------------------------------------
# torchvision


def torchvision_names() -> dict[str, object]:
    """Classification builders of ``torchvision.models`` and the model classes it exports."""
    import torchvision.models as tvm

    names = {name: tvm.get_model_builder(name) for name in tvm.list_models(module=tvm)}
    for name, obj in vars(tvm).items():
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and not name.startswith("_"):
            names.setdefault(name, obj)
    return names


def torchvision_weights(name: str, weights: str):
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
    except (ValueError, KeyError, AttributeError, TypeError):
        raise ModelSourceError(f"config key 'model.weights': torchvision has no pretrained weights for {name!r}") from None
    value = weights.split(".")[-1]
    try:
        return enum.DEFAULT if value == "DEFAULT" else enum[value]
    except KeyError:
        raise ModelSourceError(f"config key 'model.weights': {weights!r} is not a weights name of {name}; "
                               f"allowed: ['DEFAULT', {', '.join(repr(m) for m in enum.__members__)}]") from None


def weights_file(url: str) -> Path:
    """Where torch hub keeps (and looks for) a downloaded weights file: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _replace_head(model: nn.Module, old_classes: int, num_classes: int) -> str:
    """Replace the last ``nn.Linear`` with ``old_classes`` outputs by a fresh one; its name."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == old_classes:
            last = name
    if last is None:
        raise ModelSourceError(f"cannot find the classifier (a Linear layer with {old_classes} outputs) to give "
                               f"it {num_classes} classes; set model.kwargs.num_classes to {old_classes}")
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return last


def build_torchvision(name: str, kwargs: dict, num_classes: int | None, weights: str | None) -> nn.Module:
    builders = torchvision_names()
    if name not in builders:
        raise _unknown("torchvision", name, builders, " (classification models of torchvision.models)")
    builder = builders[name]
    kwargs = dict(kwargs)
    if weights is None:
        if num_classes is not None:
            kwargs.setdefault("num_classes", num_classes)
        return _call(builder, kwargs, f"torchvision {name}")
    chosen = torchvision_weights(name, weights)
    wanted = kwargs.pop("num_classes", num_classes)
    target = weights_file(chosen.url)
    try:
        model = _call(builder, {**kwargs, "weights": chosen}, f"torchvision {name}")
    except ModelSourceError:
        raise
    except Exception as error:
        if target.exists():
            raise
        raise ModelSourceError(
            f"config key 'model.weights': the pretrained weights {type(chosen).__name__}.{chosen.name} could not be "
            f"downloaded ({type(error).__name__}: {error}). Without network, download {chosen.url} elsewhere and put "
            f"it at {target} (under TORCH_HOME, now {os.environ.get('TORCH_HOME', '~/.cache/torch (unset)')})"
        ) from error
    categories = len(chosen.meta.get("categories") or []) or None
    if wanted is not None and categories is not None and wanted != categories:
        head = _replace_head(model, categories, wanted)
        print(f"pretrained {name}: classifier {head!r} replaced ({categories} -> {wanted} classes), "
              "freshly initialised", file=sys.stderr)
    return model


# ----------------------------------------------------------------------------------------------
# timm


def _import_timm():
    try:
        import timm
    except ImportError:
        raise ModelSourceError(
            "config key 'model.timm': the timm package is not installed; install the optional extra: "
            "pip install 'convergent[timm]' (or pip install timm; conda install -c conda-forge timm)") from None
    return timm


def build_timm(name: str, kwargs: dict, num_classes: int | None, weights: str | None) -> nn.Module:
    timm = _import_timm()
    if not timm.is_model(name):
        raise _unknown("timm", name, timm.list_models())
    if weights not in (None, "DEFAULT"):
        raise ModelSourceError(f"config key 'model.weights': timm models take weights: DEFAULT (timm's pretrained "
                               f"tag is part of the name, e.g. {name}.a1_in1k); got {weights!r}")
    kwargs = dict(kwargs)
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    if weights is None:
        return _call(timm.create_model, {"model_name": name, **kwargs}, f"timm {name}")
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as error:
        cfg = timm.models.get_pretrained_cfg(name.split(".")[0]) if hasattr(timm.models, "get_pretrained_cfg") else None
        hub = getattr(cfg, "hf_hub_id", None) or name
        raise ModelSourceError(
            f"config key 'model.weights': timm's pretrained weights for {name} could not be loaded "
            f"({type(error).__name__}: {error}). They come from the Hugging Face hub ({hub}) into HF_HOME (now "
            f"{os.environ.get('HF_HOME', '~/.cache/huggingface (unset)')}); without network, copy a filled hub cache "
            f"there, or download the weights file elsewhere and give it as "
            f"model.kwargs.pretrained_cfg_overlay: {{file: /path/to/model.safetensors}}"
        ) from error


# ----------------------------------------------------------------------------------------------
# factories


def _import_factory_module(target: str, workdir: Path):
    if target.endswith(".py"):
        path = (workdir / target).resolve()
        if not path.is_file():
            raise ModelSourceError(f"config key 'model.factory': no file {path}")
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(f"convergent_factory_{path.stem}_{digest}", path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))  # the factory may import its neighbours
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise ModelSourceError(f"config key 'model.factory': {path} cannot be imported "
                                   f"({type(error).__name__}: {error})") from error
        finally:
            sys.path.remove(str(path.parent))
        return module
    try:
        return importlib.import_module(target)
    except Exception as error:
        raise ModelSourceError(f"config key 'model.factory': module {target!r} cannot be imported "
                               f"({type(error).__name__}: {error}); is it installed, or on PYTHONPATH?") from error


def build_factory(spec: str, kwargs: dict, num_classes: int | None, workdir: str | os.PathLike = ".") -> nn.Module:
    target, sep, function = spec.rpartition(":")
    if not sep or not target or not function:
        raise ModelSourceError(f"config key 'model.factory': {spec!r} must be 'path/to/file.py:function' or "
                               "'package.module:function'")
    module = _import_factory_module(target, Path(workdir))
    factory = getattr(module, function, None)
    if not callable(factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        near = closest(function, names)
        raise ModelSourceError(f"config key 'model.factory': {target} has no function {function!r}"
                               + (f"; closest names: {near}" if near else f"; callables there: {sorted(names)[:10]}"))
    kwargs = dict(kwargs)
    if num_classes is not None and "num_classes" not in kwargs and _accepts(factory, "num_classes"):
        kwargs["num_classes"] = num_classes
    model = _call(factory, kwargs, f"factory {spec}")
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"config key 'model.factory': {spec} returned a {type(model).__name__}, "
                               "not a torch.nn.Module")
    return model


def _accepts(function, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _call(function, kwargs: dict, what: str) -> nn.Module:
    try:
        return function(**kwargs)
    except ModelSourceError:
        raise
    except TypeError as error:
        raise ModelSourceError(f"{what} does not accept the keyword arguments {sorted(kwargs)} from config key "
                               f"'model.kwargs': {error}") from error

"""The layers an experiment probes, known when the workflow is read, before any job runs.

For the zoo the names are fixed (:func:`convergent.architectures.select_layers`). For any other
source they come from the model itself: it is built (on PyTorch's ``meta`` device, so no memory
is spent on weights, where the model allows) and its configured layers are resolved and checked
on a probe batch, so an unknown layer, a bad factory or an unsupported output shape stops the
workflow before the first job. The result is cached under ``.snakemake/convergent/``, keyed by
everything it depends on (the ``model`` section, the dataset's geometry, the factory file's
contents, the versions of torch, torchvision, timm and of this library's probing code), so only
the first reading of a changed configuration pays for importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from convergent.architectures import (dataset_geometry, factory_file, layer_specs, model_source,
                                      select_layers)
from convergent.outputs import atomic_output

CACHE_DIR = Path(".snakemake") / "convergent"
# Library files whose code decides which layers exist and what they are named.
_PLANNING_CODE = ("architectures.py", "layer_plan.py", "models.py", "probing.py", "sources.py", "huggingface.py")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def plan_key(model_cfg: dict, dataset_cfg: dict, workdir: str | os.PathLike = ".") -> str:
    """A hash of everything the planned layers depend on."""
    here = Path(__file__).parent
    code = hashlib.sha256(b"".join((here / name).read_bytes() for name in _PLANNING_CODE)).hexdigest()
    factory = factory_file(model_cfg, workdir)
    factory_hash = None
    if factory is not None and (Path(workdir) / factory).is_file():
        factory_hash = hashlib.sha256((Path(workdir) / factory).read_bytes()).hexdigest()
    key = {"model": model_cfg, "geometry": dataset_geometry(dataset_cfg), "factory": factory_hash, "code": code,
           "versions": [_version(p) for p in ("torch", "torchvision", "timm", "transformers")]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def plan_layers(config: dict, workdir: str | os.PathLike = ".") -> list[str]:
    """The probed layers' names, in network order (raises ValueError naming what is wrong)."""
    model_cfg = config["model"]
    source, name = model_source(model_cfg)
    specs = layer_specs(model_cfg)
    if source == "architecture":
        if specs is not None and any(s.output or s.layout or s.name != s.target for s in specs):
            raise ValueError("config key 'model.layers': the zoo's layers are given by name only")
        return select_layers(name, None if specs is None else [s.target for s in specs])
    if source == "huggingface":
        from convergent import huggingface  # no torch: hidden states are named without the model

        if huggingface.plannable_without_model(specs):
            return [s.name for s in specs]  # indices are checked when a seed is imported
    cache = Path(workdir) / CACHE_DIR / f"layers-{plan_key(model_cfg, config['dataset'], workdir)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())["layers"]
    from convergent.models import plan_probes  # imports torch: only when the plan is not cached

    probes = plan_probes(model_cfg, dataset_geometry(config["dataset"]), workdir)
    with atomic_output(cache) as tmp:
        tmp.write_text(json.dumps({"layers": list(probes), "kinds": {n: p.kind for n, p in probes.items()}}, indent=1))
    return list(probes)

"""Checking an experiment without running it: its config, its inputs, and every file it has made.

What ``convergent check`` runs. Each check returns :class:`Problem` records (where: a config key or
a file; what is wrong and what to do) instead of stopping at the first, so one report lists all of
them. Results are checked against their contracts (docs/architecture.md, "File contracts"): the
checksum recorded when a file was written (:mod:`convergent.outputs`), whether it opens and reads
whole, its layout (activation and statistics files), finite values, the pairing of probe inputs and
positions across networks, and whether checkpoints load into their model.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convergent.integrity import DamagedFileError, NonFiniteError, open_hdf5, remake_hint
from convergent.outputs import checksum_path, file_digest, recorded_checksum

# .NAME.tmpPID.EXT (outputs.atomic_output) and .NAME.sha256.tmpPID (its checksum record)
TEMPORARY = re.compile(r"^\..+\.tmp\d+(\.\w+)?$|^\..+\.sha256\.tmp\d+$")
SKIPPED_DIRS = {"logs", "benchmarks", ".resume"}  # written by Snakemake, or a resume cache
READ_ERRORS = (DamagedFileError, NonFiniteError, ValueError, KeyError, OSError, RuntimeError, TypeError)


@dataclass(frozen=True)
class Problem:
    where: str  # a config key ("checkpoints.3") or a file
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


# -- config and inputs ---------------------------------------------------------------------------

def verify_inputs(config: dict, workdir: str | os.PathLike = ".") -> list[Problem]:
    """A validated config's inputs: the dataset reads, the configured layers resolve on the model,
    and every configured checkpoint exists and fits the model."""
    from convergent.architectures import dataset_geometry
    from convergent.data import load_dataset
    from convergent.models import load_model, plan_probes

    problems = []
    try:
        geometry = load_dataset(config["dataset"]).geometry
    except Exception as error:  # noqa: BLE001 (every failure to read the data is the user's to see)
        problems.append(Problem("dataset", f"cannot be read: {_first_line(error)}"))
        channels, classes, size = dataset_geometry(config["dataset"])
        geometry = (channels, classes or 1000, size)
    try:
        plan_probes(config["model"], geometry, workdir=workdir)
    except Exception as error:  # noqa: BLE001
        problems.append(Problem("model", _first_line(error)))
    for seed, given in sorted((config.get("checkpoints") or {}).items()):
        key, path = f"checkpoints.{seed}", Path(workdir) / given
        if not path.is_file():
            problems.append(Problem(key, f"{given} does not exist"))
            continue
        try:
            load_model(config["model"], geometry, pretrained=False, checkpoint=path, checkpoint_key=key,
                       workdir=workdir)
        except Exception as error:  # noqa: BLE001
            problems.append(Problem(key, _first_line(error)))
    return problems


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text if text else type(error).__name__


# -- results ---------------------------------------------------------------------------------------

def verify_results(out: str | os.PathLike, progress: Callable[[Path], None] | None = None
                   ) -> tuple[list[Problem], int]:
    """Every file under ``results/<experiment>`` (``out``) checked against its contract;
    returns the problems and how many files were checked."""
    out = Path(out)
    problems: list[Problem] = []
    checked = 0
    activation_files = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if SKIPPED_DIRS & set(path.relative_to(out).parts[:-1]):
            continue
        if TEMPORARY.match(path.name):
            problems.append(Problem(str(path), "temporary file left by a killed job (never taken for an output); "
                                               "delete it"))
            continue
        if path.name.startswith(".") and path.name.endswith(".sha256"):
            continue  # a record; one whose file is gone (deleted as incomplete) is harmless
        checked += 1
        if progress is not None:
            progress(path)
        found = verify_file(path)
        problems += [Problem(str(path), _without_path(message, path)) for message in found]
        if not found and path.suffix == ".h5" and path.parent.name == "activations":
            activation_files.append(path)
    problems += verify_pairing(activation_files)
    return problems, checked


def _without_path(message: str, path: Path) -> str:
    """The message without its first naming of ``path``, which the line already starts with."""
    if message.startswith(f"{path}, "):
        return message[len(f"{path}, "):]
    return message.replace(f" {path} ", " ", 1)


def verify_file(path: Path) -> list[str]:
    """What is wrong with one result file (nothing: an empty list): the kind of damage where its
    contract says, else a checksum that differs from the one recorded when it was written."""
    found = verify_contract(path)
    recorded = recorded_checksum(path)
    if not found and recorded is not None and recorded != file_digest(path):
        found = [f"content differs from the SHA-256 recorded when it was written ({checksum_path(path).name}): "
                 f"damaged or changed since; {remake_hint(path)}"]
    return found


def verify_contract(path: Path) -> list[str]:
    """Whether a result file reads whole and keeps its contract (by its directory and suffix)."""
    try:
        if path.suffix == ".h5" and path.parent.name == "activations":
            return verify_activation_file(path)
        if path.suffix == ".h5" and path.parent.name == "stats":
            return verify_statistics_file(path)
        if path.suffix == ".h5":
            with open_hdf5(path) as h5:
                h5.visititems(lambda _name, item: item[()] if hasattr(item, "shape") else None)
        elif path.suffix == ".pt" and path.parent.name == "models":
            return verify_model_file(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path) as data:
                for name in data.files:
                    data[name]
        elif path.suffix == ".csv":
            import pandas as pd

            pd.read_csv(path)
    except READ_ERRORS as error:
        message = _first_line(error)
        return [message if str(path) in message else f"{message}; {remake_hint(path)}"]
    except Exception as error:  # noqa: BLE001 (a parser's own error type: the file does not parse)
        return [f"does not parse ({type(error).__name__}: {_first_line(error)}); {remake_hint(path)}"]
    return []


def verify_activation_file(path: Path) -> list[str]:
    """The activation-file contract (:mod:`convergent.activations`): layout, shapes, dtypes, and
    every sample and input mean readable and finite."""
    from convergent.activations import LEGACY_KINDS, iter_sample_chunks, read_input_means

    found = []
    with open_hdf5(path, "activation file") as h5:
        if "layers" not in h5.attrs or "probe/image_index" not in h5:
            return [f"not an activation file (no 'layers' attribute or probe/image_index); {remake_hint(path)}"]
        n_inputs = len(h5["probe/image_index"])
        layers = [str(name) for name in h5.attrs["layers"]]
        for layer in layers:
            group = h5.get(f"layers/{layer}")
            if group is None or "samples" not in group:
                found.append(f"layer {layer!r} is listed but has no samples")
                continue
            samples = group["samples"]
            if samples.ndim != 2 or samples.dtype.kind != "f":
                found.append(f"layer {layer!r}: samples are {samples.dtype} {samples.shape}, not 2-d floats")
                continue
            kind = LEGACY_KINDS.get(str(group.attrs.get("kind")), str(group.attrs.get("kind")))
            if kind in ("spatial", "tokens"):
                positions = group.get("positions")
                if positions is None or positions.shape != (samples.shape[0], 3):
                    found.append(f"layer {layer!r}: positions {None if positions is None else positions.shape} "
                                 f"do not match {samples.shape[0]} samples")
                elif positions.shape[0] and int(positions[:, 0].max()) >= n_inputs:
                    found.append(f"layer {layer!r}: positions name inputs beyond the {n_inputs} probe inputs")
            elif samples.shape[0] != n_inputs:
                found.append(f"layer {layer!r}: {samples.shape[0]} rows for {n_inputs} probe inputs")
    if found:
        return [f"{'; '.join(found)}; {remake_hint(path)}"]
    for layer in layers:
        for _ in iter_sample_chunks(path, layer, 65536):
            pass
        read_input_means(path, layer)
    return []


def verify_statistics_file(path: Path) -> list[str]:
    """``stats/{layer}.h5`` (:class:`convergent.correlation.LayerStats`): shapes agree, moments are
    finite, correlations finite between live units (dead units' are NaN by contract)."""
    from convergent.correlation import LayerStats

    stats = LayerStats.load(path)
    seeds, units = stats.mean.shape
    size = seeds * units
    found = [f"{name} is {getattr(stats, name).shape}, expected {shape}" for name, shape in
             (("std", (seeds, units)), ("dead", (seeds, units)), ("cov", (size, size)), ("corr", (size, size)))
             if getattr(stats, name).shape != shape]
    if not found:
        live = ~stats.dead.ravel()
        if not (np.isfinite(stats.mean).all() and np.isfinite(stats.std).all()):
            found.append("non-finite means or standard deviations")
        elif not np.isfinite(stats.corr[np.ix_(live, live)]).all():
            found.append("non-finite correlations between live units")
    return [f"{'; '.join(found)}; {remake_hint(path)}"] if found else []


def verify_model_file(path: Path) -> list[str]:
    """A convergent checkpoint: loads into the model it names, with finite weights."""
    import torch

    from convergent.models import load_checkpoint

    module, _ = load_checkpoint(path)
    broken = [name for name, tensor in module.state_dict().items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        return [f"non-finite weights in {len(broken)} tensors ({', '.join(broken[:5])}): a diverged network; "
                f"retrain it with a lower 'train.lr' ({remake_hint(path)})"]
    return []


def verify_pairing(paths: list[Path]) -> list[Problem]:
    """Every activation file has the same probe inputs and positions per layer (shared layers)."""
    from convergent.activations import check_paired, layer_names

    if len(paths) < 2:
        return []
    problems = []
    shared = set.intersection(*(set(layer_names(p)) for p in paths))
    for layer in sorted(shared):
        try:
            check_paired(paths, layer)
        except ValueError as error:
            problems.append(Problem(str(paths[0].parent), _first_line(error)))
    return problems

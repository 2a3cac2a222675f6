"""Checkpoints: convergent's own format, and weights trained anywhere else.

A convergent checkpoint (``models/seed{seed}.pt``) is a dict tagged ``format:
convergent-checkpoint-v1`` holding the ``state_dict``, the model source (``architecture`` for the
zoo, ``model`` for any other source), the input geometry, the seed and the training metrics.

Weights from elsewhere (:func:`read_state_dict`): ``.pt``/``.pth`` files holding a state_dict
(bare, or under ``state_dict``/``model``/``model_state_dict``/... as training scripts save them)
and ``.safetensors`` files. They are read with ``torch.load(weights_only=True)``: a pickled whole
module would run code from the file when loaded, so it is refused with a message saying how to
save its ``state_dict`` instead. :func:`fit_state_dict` strips the prefixes that wrappers add
(``module.`` from DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``, ``model.`` from
Lightning-style wrappers) and loads the weights strictly, naming missing, unexpected and
mis-shaped keys (the first few of each, and how many).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_FORMAT = "convergent-checkpoint-v1"
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "ema_state_dict")
SHOWN = 5


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the model; the message names the keys."""


def is_convergent(payload) -> bool:
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT


def _safe_globals() -> list:
    """Harmless classes that training scripts often pickle beside the weights."""
    import numpy as np

    allowed = [argparse.Namespace, np.ndarray, np.dtype]
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    allowed += [_reconstruct, scalar]
    allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool")]
    return allowed


def load_payload(path: str | os.PathLike):
    """The object in a checkpoint file, read without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # noqa: BLE001 (SafetensorError and OSError: the file is unreadable)
            raise _damaged_error(path, error) from None
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):
            raise _unsafe_pickle_error(path, str(error)) from None
        raise _damaged_error(path, error) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:  # torch's zip reader, a short legacy pickle
        raise _damaged_error(path, error) from None


def _damaged_error(path: Path, error: BaseException) -> CheckpointError:
    """A checkpoint that cannot be read at all: say so, how big it is, and how to get it back."""
    from convergent.integrity import remake_hint

    size = path.stat().st_size
    lines = [line for line in str(error).splitlines() if line.strip()]
    detail = lines[-1].strip() if lines else type(error).__name__
    with open(path, "rb") as handle:
        zipped = handle.read(2) == b"PK"  # torch.save writes a zip archive
    kind = ("empty" if size == 0 else "corrupt" if zipfile.is_zipfile(path)
            else "truncated" if zipped else "not a torch checkpoint")
    return CheckpointError(f"checkpoint {path} is damaged ({kind}, {size} bytes: {detail[:200]}); {remake_hint(path)}")


def _unsafe_pickle_error(path: Path, message: str) -> CheckpointError:
    found = re.search(r"GLOBAL ([\w.]+)", message)
    name = found.group(1) if found else "an object torch will not unpickle safely"
    if found and _is_module_class(name):
        return CheckpointError(
            f"checkpoint {path} holds a whole pickled model ({name}), not a state_dict: loading it would run "
            f"code stored in the file. Where it was made, save its weights instead: "
            f"torch.save(model.state_dict(), '{path.stem}.pt') (or safetensors.torch.save_file)")
    return CheckpointError(
        f"checkpoint {path} pickles {name}, which cannot be read without running code from the file; save the "
        f"weights alone (torch.save(model.state_dict(), ...) or safetensors) and give that file")


def _is_module_class(qualified: str) -> bool:
    module_name, _, attr = qualified.rpartition(".")
    try:
        import importlib

        obj = getattr(importlib.import_module(module_name), attr)
    except Exception:  # noqa: BLE001 (unknown class: not provably a module)
        return False
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint made anywhere (see the module docstring)."""
    payload = load_payload(path)
    if is_convergent(payload):
        return payload["state_dict"]
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload
    if isinstance(payload, dict):
        for key in _NESTED_KEYS:
            inner = payload.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        raise CheckpointError(f"checkpoint {path}: no state_dict in it (top-level keys: {sorted(map(str, payload))[:10]}); "
                              f"looked for a dict of tensors, or one under {list(_NESTED_KEYS)}")
    raise CheckpointError(f"checkpoint {path}: expected a state_dict, found a {type(payload).__name__}")


def strip_wrapper_prefixes(state: dict, expected: set[str]) -> dict:
    """Drop ``module.`` / ``_orig_mod.`` / ``model.`` where every key has it and the model's keys do not."""
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in expected):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return f"{keys[:SHOWN]}{more}"


def fit_state_dict(model: nn.Module, state: dict, source: str, what: str) -> None:
    """Load ``state`` into ``model`` strictly, or raise naming every kind of mismatch.

    ``source`` names the checkpoint (and its config key) and ``what`` the model, for the message.
    Missing BatchNorm ``num_batches_tracked`` counters (absent from old checkpoints) are kept.
    """
    own = model.state_dict()
    state = strip_wrapper_prefixes(dict(state), set(own))
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing keys {_listed(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected keys {_listed(unexpected)}" if unexpected else "",
                 f"{len(shapes)} keys of another shape {_listed(shapes)}" if shapes else ""]
        raise CheckpointError(f"checkpoint {source} does not fit {what}: " + "; ".join(p for p in parts if p))
    for key in own:
        if key not in state:
            state[key] = own[key]
    model.load_state_dict(state, strict=True)

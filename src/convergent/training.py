"""Training with deterministic seeding, a resumable checkpoint every epoch, and held-out accuracy.

Reproducibility: the seed fixes the initial weights; every epoch re-seeds the RNG from
``(seed, epoch)``, so data order and augmentation of epoch *e* do not depend on whether training
was interrupted before it. A run killed after epoch *e* and resumed therefore ends with the same
weights as an uninterrupted run (on CPU, where kernels are deterministic).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from convergent.architectures import describe_source
from convergent.checkpoints import CHECKPOINT_FORMAT
from convergent.data import ImageSplits
from convergent.integrity import NonFiniteError
from convergent.models import load_checkpoint, load_model  # noqa: F401 (load_checkpoint re-exported)
from convergent.outputs import atomic_output
from convergent.progress import progress_callback
from convergent.provenance import environment


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error, not a silent fallback."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available; use 'auto' or 'cpu'")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Write to a temporary name, then rename: a killed job never leaves a half-written file."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def augment_batch(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Random translation (zero-padded crop) and optional horizontal flip, drawn from torch's RNG."""
    if mode == "none":
        return x
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,)).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,)).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if mode == "crop_flip":
        flip = torch.rand(n) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


def logits_of(output) -> torch.Tensor:
    """The class scores in a model's output: the tensor itself, ``.logits`` (ModelOutput), the
    first element of a tuple (Inception's aux outputs) or the ``logits``/first entry of a dict."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict):
        return output["logits"] if "logits" in output else next(iter(output.values()))
    if isinstance(output, (tuple, list)):
        return logits_of(output[0])
    raise TypeError(f"cannot find class scores in a model output of type {type(output).__name__}")


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``dataset``."""
    model.eval()
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        pred = logits_of(model(x.to(device))).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct / max(total, 1)


@torch.no_grad()
def heldout_accuracy(model: nn.Module, splits: ImageSplits, device: torch.device) -> tuple[float | None, str | None]:
    """Held-out accuracy, or None (and why) when the model's outputs are not the dataset's classes
    (a checkpoint with another head: its class indices mean something else)."""
    x, _ = next(iter(DataLoader(splits.heldout, batch_size=2)))
    outputs = logits_of(model.eval()(x.to(device))).shape[-1]
    if outputs != splits.num_classes:
        return None, (f"no accuracy: the model has {outputs} outputs and dataset {splits.name!r} "
                      f"{splits.num_classes} classes")
    return evaluate(model, splits.heldout, device), None


def _make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                           weight_decay=cfg["weight_decay"])


def _model_cfg(model: str | dict) -> dict:
    return {"architecture": model} if isinstance(model, str) else dict(model)


def checkpoint_payload(model: nn.Module, model_cfg: str | dict, splits: ImageSplits, seed: int,
                       metrics: dict) -> dict:
    """A convergent checkpoint; ``model_cfg`` is a zoo architecture name or a ``model`` section."""
    model_cfg = _model_cfg(model_cfg)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": describe_source(model_cfg),
        "in_channels": splits.in_channels,
        "num_classes": splits.num_classes,
        "image_size": splits.image_size,
        "seed": seed,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": metrics,
    }
    if "architecture" not in model_cfg:
        # any other source is rebuilt from its config section (the zoo's payload is as it always was)
        payload["model"] = {k: v for k, v in model_cfg.items() if k != "layers"}
    return payload


def _read_resume(path: Path, device: torch.device) -> dict | None:
    """The resume state, or None (and why, in the log) when the file is damaged: it only saves
    time, so a damaged one costs a fresh start, never a failed job."""
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # noqa: BLE001 (truncated zip, bad pickle, ...: all mean unusable)
        print(f"resume file {path} is damaged ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
              "training from the start", file=sys.stderr)
        return None


def _kept(resume_path: Path, start_epoch: int, epoch: int) -> str:
    if epoch > start_epoch or start_epoch > 0:
        return (f"The state after epoch {epoch} is kept in {resume_path} (a rerun with the same settings resumes "
                "from it); no model was written.")
    return "No epoch completed; no model was written."


def train_model(
    model_cfg: str | dict,
    splits: ImageSplits,
    cfg: dict,
    seed: int,
    resume_path: str | os.PathLike,
    fingerprint: str,
    progress=None,
) -> tuple[nn.Module, dict]:
    """Train one network; resume from ``resume_path`` if it holds a checkpoint of the same run.

    ``fingerprint`` identifies the run (config and seed): a resume file with another fingerprint
    is from different settings and is ignored rather than continued.
    ``progress``: None (silent), True (a tqdm bar) or ``callable(done, total)``, counted in
    batches over all epochs; when on, each epoch's loss and accuracies are printed to stderr.
    Returns the trained model (on CPU) and its metrics.
    """
    device = select_device(cfg["device"])
    if splits.train is None:
        raise ValueError(f"dataset {splits.name!r} has no training split (for imagefolder: no 'train' folder); "
                         "give every seed a checkpoint in config key 'checkpoints' instead of training")
    model_cfg = _model_cfg(model_cfg)
    seed_everything(seed)
    model = load_model(model_cfg, (splits.in_channels, splits.num_classes, splits.image_size)).module.to(device)
    optimizer = _make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg["milestones"], cfg["gamma"])
    start_epoch, elapsed, history = 0, 0.0, []
    resume_path = Path(resume_path)
    state = _read_resume(resume_path, device) if resume_path.exists() else None
    if state is not None:
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, elapsed, history = state["epoch"], state["elapsed"], state["history"]
            print(f"resuming seed {seed} after epoch {start_epoch} from {resume_path}", file=sys.stderr)
    use_amp = cfg["amp"] and device.type == "cuda"
    loss_fn = nn.CrossEntropyLoss()
    report = progress_callback(progress, f"train seed {seed}", unit="batch")
    for epoch in range(start_epoch, cfg["epochs"]):
        began = time.perf_counter()
        torch.manual_seed(_epoch_seed(seed, epoch))
        order = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        loader = DataLoader(splits.train, batch_size=cfg["batch_size"], shuffle=True, generator=order,
                            num_workers=cfg["num_workers"], drop_last=False)
        model.train()
        total_loss = correct = seen = 0
        per_epoch = len(loader)
        if report is not None:
            report(epoch * per_epoch, cfg["epochs"] * per_epoch)
        for batch_no, (x, y) in enumerate(loader):
            if splits.name != "imagefolder":
                x = augment_batch(x, cfg["augment"])
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = logits_of(model(x))
                loss = loss_fn(logits, y)
            value = float(loss.detach())
            if not math.isfinite(value):  # before the step: the weights stay those of the last good batch
                raise NonFiniteError(
                    f"seed {seed}: training loss is {value} at epoch {epoch + 1} of {cfg['epochs']}, batch {batch_no + 1} "
                    f"of {len(loader)} (learning rate {optimizer.param_groups[0]['lr']:g}): training diverged. "
                    f"{_kept(resume_path, start_epoch, epoch)} Lower config key 'train.lr' (now {cfg['lr']}) "
                    "or check the inputs for NaN")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if report is not None:
                report(epoch * per_epoch + batch_no + 1, cfg["epochs"] * per_epoch)
        scheduler.step()
        broken = [name for name, tensor in model.state_dict().items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if broken:
            raise NonFiniteError(
                f"seed {seed}: non-finite weights after epoch {epoch + 1} of {cfg['epochs']} in {len(broken)} tensors "
                f"({', '.join(broken[:5])}) at learning rate {optimizer.param_groups[0]['lr']:g}: training diverged. "
                f"{_kept(resume_path, start_epoch, epoch)} Lower config key 'train.lr' (now {cfg['lr']})")
        heldout_accuracy = evaluate(model, splits.heldout, device)
        elapsed += time.perf_counter() - began
        history.append({"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen,
                        "heldout_accuracy": heldout_accuracy, "seconds": elapsed})
        if report is not None:
            print(f"train seed {seed}: epoch {epoch + 1}/{cfg['epochs']}, loss {total_loss / seen:.3f}, "
                  f"train accuracy {correct / seen:.3f}, held-out accuracy {heldout_accuracy:.3f}, "
                  f"{elapsed:.0f} s", file=sys.stderr, flush=True)
        atomic_save({"fingerprint": fingerprint, "epoch": epoch + 1, "elapsed": elapsed,
                     "history": history, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                    resume_path)
    last = history[-1] if history else {"heldout_accuracy": evaluate(model, splits.heldout, device)}
    metrics = {
        "seed": seed,
        "architecture": describe_source(model_cfg),
        "dataset": splits.name,
        "epochs": cfg["epochs"],
        "heldout_accuracy": last["heldout_accuracy"],
        "train_accuracy": last.get("train_accuracy"),
        "seconds": elapsed,
        "device": str(device),
        "history": history,
        "environment": environment(device),
    }
    return model.cpu(), metrics

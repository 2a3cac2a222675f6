"""Linear mode connectivity: the loss along the straight line between two networks' weights.

For networks A and B' (B aligned to A by a permutation, :mod:`convergent.permutation`, or not),
``θ(α) = (1 − α)·θ_A + α·θ_B'`` is evaluated on held-out data for α on a grid. Batch-norm
running statistics of an interpolated network are not the interpolation of the endpoints'
statistics, so at every α they are recomputed on training batches (the reset of Jordan et al.
2023, "REPAIR", §3: momentum off, a cumulative average over the batches, only the batch-norm
layers in training mode). Networks without batch norm need no reset.

The *barrier* (Frankle et al. 2020; Entezari et al. 2022; Ainsworth et al. 2023 eq. 1) is the
largest rise of the loss above the straight line between the endpoints' losses,

    B = max_α [ L(θ(α)) − ((1 − α)·L(θ_A) + α·L(θ_B')) ],

and likewise for accuracy (the largest drop below the line). :func:`barrier` is numpy only.

>>> import numpy as np
>>> alphas = np.linspace(0, 1, 5)
>>> round(barrier(alphas, np.array([1.0, 1.5, 2.0, 1.5, 1.0])), 6)
1.0
"""

from __future__ import annotations

import numpy as np


def barrier(alphas, values, higher_is_better: bool = False) -> float:
    """Largest excursion of ``values`` (on the α grid, endpoints included) to the bad side of the
    straight line between its endpoints: above for a loss, below for an accuracy."""
    alphas, values = np.asarray(alphas, dtype=float), np.asarray(values, dtype=float)
    if alphas[0] != 0 or alphas[-1] != 1:
        raise ValueError("the α grid must start at 0 and end at 1")
    line = (1 - alphas) * values[0] + alphas * values[-1]
    excess = (line - values) if higher_is_better else (values - line)
    return float(excess.max())


def alpha_grid(points: int) -> np.ndarray:
    """``points`` evenly spaced values from 0 to 1 (both included)."""
    if points < 2:
        raise ValueError("the α grid needs at least 2 points")
    return np.linspace(0.0, 1.0, int(points))


def mix_state(state_a: dict, state_b: dict, alpha: float) -> dict:
    """``(1 − α)·a + α·b`` for every floating-point entry; integer entries (batch counters) from a."""
    import torch

    return {k: torch.lerp(v, state_b[k], alpha) if torch.is_floating_point(v) else v.clone()
            for k, v in state_a.items()}


def has_batch_norm(model) -> bool:
    from torch import nn

    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def reset_batch_norm(model, batches, device="cpu") -> int:
    """Recompute every batch-norm layer's running mean and variance on ``batches`` (input
    tensors): statistics zeroed, momentum ``None`` (a plain average over the batches), only the
    batch-norm layers in training mode (dropout stays off). Returns the number of inputs seen."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    with torch.no_grad():
        for x in batches:
            model(x.to(device))
            seen += len(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()
    if seen == 0:
        raise ValueError("batch-norm reset needs at least one training batch")
    return seen


def evaluate(model, batches, device="cpu") -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``batches`` of (inputs, labels)."""
    import torch

    model.eval()
    loss = correct = total = 0.0
    with torch.no_grad():
        for x, y in batches:
            logits = model(x.to(device)).double()
            y = y.to(device)
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
            total += len(y)
    return loss / total, correct / total


def interpolation_curve(model, state_a: dict, state_b: dict, alphas, eval_batches, reset_batches=None,
                        device="cpu", log=None) -> list[dict]:
    """Loss and accuracy of ``θ(α)`` for every α; ``model`` is a network of the right architecture
    whose weights are overwritten. With ``reset_batches`` (a callable returning an iterable of
    training inputs) and batch norm in the model, its statistics are reset at every α."""
    reset = reset_batches is not None and has_batch_norm(model)
    # load_state_dict copies into the model's own tensors, and a state_dict() of that same
    # model would alias them: freeze the endpoints first
    state_a = {k: v.detach().clone() for k, v in state_a.items()}
    state_b = {k: v.detach().clone() for k, v in state_b.items()}
    rows = []
    for alpha in alphas:
        model.load_state_dict(mix_state(state_a, state_b, float(alpha)))
        model.to(device)
        if reset:
            reset_batch_norm(model, reset_batches(), device)
        loss, accuracy = evaluate(model, eval_batches(), device)
        rows.append({"alpha": float(alpha), "loss": loss, "accuracy": accuracy, "bn_reset": reset})
        if log:
            log(f"  alpha {alpha:.3f}: loss {loss:.4f}, accuracy {accuracy:.4f}")
    return rows


def dataset_batches(dataset, batch_size: int, limit: int | None = None, labels: bool = True, seed: int | None = None,
                    prepare=None):
    """A callable returning a fresh iterator over ``dataset`` in batches: ``(inputs, labels)``, or
    inputs only with ``labels=False``. ``limit``: the first ``limit`` items (or, with ``seed``, a
    seeded random subset of them, the same at every call). ``prepare``: applied to every batch of
    inputs (grey images given the channels a model expects: traced graphs skip the model's
    forward pre-hook that does it, :func:`convergent.models.channel_adapter`)."""
    from torch.utils.data import DataLoader, Subset

    n = len(dataset)
    if limit is not None and limit < n:
        index = (np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
                 if seed is not None else np.arange(limit))
        dataset = Subset(dataset, index.tolist())

    def batches():
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x = x if prepare is None else prepare(x)
            yield (x, y) if labels else x

    batches.size = len(dataset)
    return batches


def shuffled_batches(dataset, batch_size: int, seed: int, prepare=None):
    """A callable returning an iterator over ``dataset`` in seeded random order (a new order at
    every call, reproducible across runs); ``prepare`` as in :func:`dataset_batches`."""
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)

    def batches():
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                            drop_last=len(dataset) > batch_size)
        return iter(loader) if prepare is None else ((prepare(x), y) for x, y in loader)

    return batches


def barrier_table(curves) -> "pd.DataFrame":
    """Per seed pair and alignment: loss and accuracy barrier and the endpoints, from the curves
    written by the `connectivity` step (columns a, b, alignment, alpha, loss, accuracy); then
    mean and std (ddof=1) over pairs per alignment, with ``pair`` ``mean`` / ``std``."""
    import pandas as pd

    rows = []
    for (a, b, alignment), curve in curves.groupby(["a", "b", "alignment"], sort=False):
        curve = curve.sort_values("alpha")
        alphas = curve["alpha"].to_numpy()
        mid = curve.iloc[int(np.argmin(np.abs(alphas - 0.5)))]
        rows.append({
            "pair": f"{a}-{b}", "alignment": alignment,
            "loss_barrier": barrier(alphas, curve["loss"].to_numpy()),
            "accuracy_barrier": barrier(alphas, curve["accuracy"].to_numpy(), higher_is_better=True),
            "loss_a": curve["loss"].iloc[0], "loss_b": curve["loss"].iloc[-1],
            "accuracy_a": curve["accuracy"].iloc[0], "accuracy_b": curve["accuracy"].iloc[-1],
            "accuracy_midpoint": mid["accuracy"], "bn_reset": bool(curve["bn_reset"].any()),
        })
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("pair", "alignment", "bn_reset")]
    summary = []
    for alignment, group in table.groupby("alignment", sort=False):
        for stat in ("mean", "std"):
            values = group[numeric].mean() if stat == "mean" else group[numeric].std(ddof=1)
            summary.append({"pair": stat, "alignment": alignment, **values.to_dict(),
                            "bn_reset": bool(group["bn_reset"].any())})
    return pd.concat([table, pd.DataFrame(summary)], ignore_index=True)

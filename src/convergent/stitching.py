"""Model stitching: A's bottom layers feeding B's top layers through a stitching layer.

Lenc & Vedaldi 2015 ("Understanding image representations by measuring their equivariance and
equivalence") and Bansal et al. 2021 ("Revisiting model stitching to compare neural
representations"): cut both networks at the same probe layer, feed A's activations through a
small map into B's remaining layers, and measure how much accuracy is lost. Both networks stay
frozen; only the map is fitted. The *stitching penalty* is B's accuracy minus the stitched
network's accuracy.

Three maps, each from A's units to B's at the probed layer:

* ``trained`` (Bansal et al. §3): a 1×1 convolution followed by batch norm for spatial maps, a
  linear layer for vectors, trained with Adam on the task loss on training images. It starts
  from the least-squares map from A's activations to B's (as Csiszárik et al. 2021 found, this
  "direct matching" start is already close; it lets a few hundred steps suffice on a CPU).
* ``permutation``: Li et al. 2016 §3.1's one-to-one matching (the pipeline's bipartite matching
  of the layer, by correlation) as a map: B's unit ``j`` receives its matched A unit,
  standardised and rescaled to ``j``'s mean and spread; unmatched B units get their mean.
* ``sparse``: Li et al.'s §4 sparse one-to-many map (:mod:`convergent.sparse_mapping`) at one
  L1 decay, fitted on standardised activations of training images and applied the same way.

Neither of the last two is trained for the task: they test whether the papers' mappings carry
function, not only correlation. Everything here imports torch inside functions except the
helpers of pure numpy.
"""

from __future__ import annotations

import numpy as np

from convergent.sparse_mapping import Moments, sparse_mapping

STITCHES = ("trained", "permutation", "sparse")


def _live_std(std: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """``std`` with units at float32 precision of the layer's spread set to 0 (treated as dead:
    dividing by such a spread would blow their round-off up)."""
    return np.where(std <= rtol * std.max(initial=0.0), 0.0, std)


def standardized_affine(coef: np.ndarray, mean_x, std_x, mean_y, std_y) -> tuple[np.ndarray, np.ndarray]:
    """``(weight [m, p], bias [m])`` of ``y = mean_y + std_y ⊙ coefᵀ((x − mean_x) / std_x)``: a map
    between standardised activations expressed on the raw ones. Dead units (std 0) of x get weight
    0; of y, weight 0 and their mean as bias.

    >>> w, b = standardized_affine(np.eye(2), [1.0, 0.0], [2.0, 1.0], [0.0, 5.0], [1.0, 3.0])
    >>> w.tolist(), b.tolist()
    [[0.5, 0.0], [0.0, 3.0]], [-0.5, 5.0]]
    """
    coef = np.asarray(coef, dtype=np.float64)
    std_x, std_y = np.asarray(std_x, float), np.asarray(std_y, float)
    inv_x = np.divide(1.0, std_x, out=np.zeros_like(std_x), where=std_x > 0)
    weight = (coef * inv_x[:, None] * std_y[None, :]).T
    bias = np.asarray(mean_y, float) - weight @ np.asarray(mean_x, float)
    return weight, bias


def permutation_coef(partner: np.ndarray, n_b: int) -> np.ndarray:
    """``[p, m]`` 0/1 matrix with a one at (i, partner[i]) for every matched unit i of A."""
    partner = np.asarray(partner)
    coef = np.zeros((len(partner), n_b))
    matched = partner >= 0
    coef[np.flatnonzero(matched), partner[matched]] = 1.0
    return coef


def least_squares(moments: Moments, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """``(weight [m, p], bias [m])`` of the least-squares affine map from x to y, from moments;
    a ridge of ``ridge``·mean variance keeps collinear or dead units harmless."""
    n = moments.n
    mean_x, mean_y = moments.mean_x, moments.mean_y
    cx = moments.sum_x / n
    cy = moments.sum_y / n
    cov_xx = moments.xx / n - np.outer(cx, cx)
    cov_xy = moments.xy / n - np.outer(cx, cy)
    scale = max(np.trace(cov_xx) / max(len(cov_xx), 1), 1e-12)
    weight = np.linalg.solve(cov_xx + ridge * scale * np.eye(len(cov_xx)), cov_xy).T
    return weight, mean_y - weight @ mean_x


# --------------------------------------------------------------------------- torch parts


def layer_moments(bottom_a, bottom_b, batches, device="cpu", positions: int | None = None,
                  validation_fraction: float = 0.2, seed: int = 0) -> tuple[Moments, Moments]:
    """Moments of A's and B's activations at the cut (rows: inputs × spatial positions, or
    ``positions`` random ones per input), split by input into a fitting and a validation part
    (whole inputs on one side: positions of one image are strongly correlated)."""
    import torch

    from convergent.network_graph import paired_rows

    fit = val = None
    first = 0
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for x in batches:
            x = x.to(device)
            ya, yb = paired_rows(bottom_a(x), bottom_b(x), positions, generator)
            ra, rb = ya.cpu().numpy(), yb.cpu().numpy()
            held_inputs = np.random.default_rng([seed, first]).random(len(x)) < validation_fraction
            held = np.repeat(held_inputs, len(ra) // len(x))  # rows are input-major
            first += len(x)
            if fit is None:
                shift_a, shift_b = ra.mean(0), rb.mean(0)
                empty = np.zeros((0, ra.shape[1])), np.zeros((0, rb.shape[1]))
                fit = val = Moments.of(*empty, shift_a, shift_b)
            fit = fit + Moments.of(ra[~held], rb[~held], shift_a, shift_b)
            val = val + Moments.of(ra[held], rb[held], shift_a, shift_b)
    if fit is None:
        raise ValueError("no batches to fit the stitching maps on")
    return fit, val


def affine_module(weight: np.ndarray, bias: np.ndarray, spatial: bool):
    """A fixed 1×1 convolution (spatial maps) or linear layer computing ``weight @ x + bias``."""
    import torch
    from torch import nn

    m, p = weight.shape
    layer = nn.Conv2d(p, m, 1) if spatial else nn.Linear(p, m)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight).reshape(layer.weight.shape))
        layer.bias.copy_(torch.as_tensor(bias))
    return layer


def affine_output_moments(weight: np.ndarray, bias: np.ndarray, moments: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per output unit of ``weight @ x + bias`` over the rows of ``moments``."""
    n = moments.n
    cx = moments.sum_x / n
    cov_xx = moments.xx / n - np.outer(cx, cx)
    return weight @ moments.mean_x + bias, np.einsum("mp,pq,mq->m", weight, cov_xx, weight)


def trained_stitch(c_a: int, c_b: int, spatial: bool, init: tuple[np.ndarray, np.ndarray] | None = None,
                   init_moments: tuple[np.ndarray, np.ndarray] | None = None):
    """Bansal et al.'s stitching layer: 1×1 conv + batch norm (spatial maps) or linear (vectors).

    With ``init = (weight, bias)`` the layer starts as that affine map; for spatial maps the batch
    norm then starts as an identity on it: running statistics and affine parameters set from
    ``init_moments`` (mean and variance of the map's output per unit)."""
    import torch
    from torch import nn

    if not spatial:
        return affine_module(*init, spatial=False) if init is not None else nn.Linear(c_a, c_b)
    conv, norm = nn.Conv2d(c_a, c_b, 1), nn.BatchNorm2d(c_b)
    if init is not None:
        conv = affine_module(*init, spatial=True)
        mean, var = (np.asarray(v, dtype=np.float64) for v in init_moments)
        var = np.maximum(var, 0.0)
        with torch.no_grad():
            norm.running_mean.copy_(torch.as_tensor(mean))
            norm.running_var.copy_(torch.as_tensor(var))
            norm.weight.copy_(torch.as_tensor(np.sqrt(var + norm.eps)))
            norm.bias.copy_(torch.as_tensor(mean))
    return nn.Sequential(conv, norm)


def stitched(bottom_a, stitch, top_b):
    """``top_b(stitch(bottom_a(x)))`` as one module, whose ``train()`` trains only the stitch:
    both networks stay frozen, batch-norm statistics included."""
    from torch import nn

    class Stitched(nn.Module):
        def __init__(self):
            super().__init__()
            self.bottom_a, self.stitch, self.top_b = bottom_a, stitch, top_b

        def forward(self, x):
            return self.top_b(self.stitch(self.bottom_a(x)))

        def train(self, mode: bool = True):
            super().train(False)
            self.stitch.train(mode)
            return self

    return Stitched()


def train_stitch(model, batches, steps: int, lr: float, device="cpu", log=None) -> list[float]:
    """Adam on the stitch's parameters only (both networks frozen), cross-entropy on training
    (inputs, labels) from ``batches()`` (called again when it runs out), for ``steps`` steps of
    ``model`` (from :func:`stitched`); returns the loss per step."""
    import torch

    for module in (model.bottom_a, model.top_b):
        for p in module.parameters():
            p.requires_grad_(False)
    params = [p for p in model.stitch.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    losses = []
    iterator = iter(batches())
    for step in range(steps):
        try:
            x, y = next(iterator)
        except StopIteration:
            iterator = iter(batches())
            x, y = next(iterator)
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            h = model.bottom_a(x)
        loss = torch.nn.functional.cross_entropy(model.top_b(model.stitch(h)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, steps // 4) == 0:
            log(f"    step {step + 1}/{steps}: loss {np.mean(losses[-max(1, steps // 4):]):.4f}")
    model.eval()
    return losses


def _evaluate_stitches(bottom_a, stitches: dict, top_b, batches, device="cpu") -> dict[str, tuple[float, float]]:
    """Loss and accuracy of ``top_b(stitch(bottom_a(x)))`` for every stitch, A's bottom run once per batch."""
    import torch

    totals = {name: [0.0, 0.0] for name in stitches}
    count = 0
    with torch.no_grad():
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            h = bottom_a(x)
            for name, stitch in stitches.items():
                logits = top_b(stitch.eval()(h)).double()
                totals[name][0] += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
                totals[name][1] += float((logits.argmax(1) == y).sum())
            count += len(y)
    return {name: (loss / count, correct / count) for name, (loss, correct) in totals.items()}


def stitch_layers(model_a, model_b, layers: list[str], partners: dict, fit_batches, train_batches,
                  eval_batches, decay: float, steps: int, lr: float, device="cpu", positions: int | None = None,
                  seed: int = 0, log=print, targets: dict | None = None) -> list[dict]:
    """The three stitches (A's bottom → B's top) at every layer in ``layers``.

    Both networks are cut at the layer's graph node (:func:`convergent.network_graph.cut`): a zoo
    probe point, or for any other model the module or FX node ``targets[layer]`` (default: the
    layer's name). The stitching layer's shape follows the output there: a 1×1 convolution and
    batch norm for ``[N, C, H, W]`` maps, a linear layer for ``[N, C]`` vectors.

    ``partners``: per layer, the matching's partner in B of each unit of A (-1: unmatched), or
    None to skip the permutation stitch. ``fit_batches()`` yields training inputs for the
    activation moments (sparse map, standardisation, least-squares start); ``train_batches()``
    (inputs, labels) for training the stitching layer; ``eval_batches()`` held-out (inputs,
    labels). Returns one row per layer and stitch: ``layer, stitch, loss, accuracy, accuracy_a,
    accuracy_b, penalty`` (B's accuracy minus the stitched accuracy) and what each map is.
    """
    import torch

    from convergent.connectivity import evaluate
    from convergent.network_graph import cut, trace

    model_a, model_b = model_a.to(device).eval(), model_b.to(device).eval()
    loss_a, acc_a = evaluate(model_a, eval_batches(), device)
    loss_b, acc_b = evaluate(model_b, eval_batches(), device)
    log(f"A: accuracy {acc_a:.4f}, loss {loss_a:.4f}; B: accuracy {acc_b:.4f}, loss {loss_b:.4f}")
    graph_a, graph_b = trace(model_a), trace(model_b)
    rows = []
    for layer in layers:
        target = (targets or {}).get(layer)
        bottom_a, _ = cut(model_a, layer, target, graph_a)
        bottom_b, top_b = cut(model_b, layer, target, graph_b)
        fit, val = layer_moments(bottom_a, bottom_b, fit_batches(), device, positions, seed=seed)
        with torch.no_grad():
            shape = tuple(bottom_a(next(iter(fit_batches())).to(device)[:1]).shape)
        if len(shape) not in (2, 4):
            raise ValueError(f"{layer}: stitching layers exist for [N, C, H, W] maps and [N, C] vectors; "
                             f"this layer's output has shape {list(shape)}")
        spatial = len(shape) == 4
        std_x, std_y = (_live_std(s) for s in fit.std())
        c_a, c_b = len(std_x), len(std_y)
        stitches, info = {}, {}

        partner = partners.get(layer)
        if partner is not None:
            partner = np.asarray(partner)
            if len(partner) != c_a or partner.max(initial=-1) >= c_b:
                raise ValueError(f"{layer}: the matching has {len(partner)} units of A (the network has {c_a}) "
                                 f"or partners beyond B's {c_b} units")
            coef = permutation_coef(partner, c_b)
            weight, bias = standardized_affine(coef, fit.mean_x, std_x, fit.mean_y, std_y)
            stitches["permutation"] = affine_module(weight, bias, spatial).to(device)
            info["permutation"] = {"matched": int((partner >= 0).sum()), "units_a": c_a, "units_b": c_b}

        table, coefs = sparse_mapping(fit, val, decays=[decay], return_coef=True)
        weight, bias = standardized_affine(coefs[0], fit.mean_x, std_x, fit.mean_y, std_y)
        stitches["sparse"] = affine_module(weight, bias, spatial).to(device)
        row = table.iloc[0]
        info["sparse"] = {"decay": decay, "nonzero_per_unit": float(row["nonzero"]),
                          "fit_loss": float(row["loss"]), "converged": bool(row["converged"])}

        weight, bias = least_squares(fit)
        torch.manual_seed(seed)
        stitch = trained_stitch(c_a, c_b, spatial, (weight, bias), affine_output_moments(weight, bias, fit)).to(device)
        log(f"{layer}: training the stitching layer ({'1x1 conv + batch norm' if spatial else 'linear'}, "
            f"{c_a} -> {c_b} units) for {steps} steps")
        losses = train_stitch(stitched(bottom_a, stitch, top_b), train_batches, steps, lr, device, log)
        stitches["trained"] = stitch
        info["trained"] = {"steps": steps, "final_train_loss": float(np.mean(losses[-10:])) if losses else float("nan")}

        results = _evaluate_stitches(bottom_a, stitches, top_b, eval_batches(), device)
        for name in STITCHES:
            if name not in results:
                continue
            loss, accuracy = results[name]
            rows.append({"layer": layer, "stitch": name, "kind": "spatial" if spatial else "vector",
                         "loss": loss, "accuracy": accuracy, "accuracy_a": acc_a, "accuracy_b": acc_b,
                         "loss_b": loss_b, "penalty": acc_b - accuracy, **_flat(info[name])})
            log(f"  {name:<12} accuracy {accuracy:.4f} (B {acc_b:.4f}): penalty {acc_b - accuracy:+.4f}")
    return rows


def _flat(info: dict) -> dict:
    return {f"info_{k}": v for k, v in info.items()}


def stitching_table(frame, layers: list[str]) -> "pd.DataFrame":
    """Per layer and stitch, over seed pairs: mean and std (ddof=1) of the penalty and of the
    stitched accuracy, B's mean accuracy, and the sparse map's mean non-zero weights per unit."""
    import pandas as pd

    rows = []
    for layer in layers:
        for stitch in STITCHES:
            sub = frame[(frame["layer"] == layer) & (frame["stitch"] == stitch)]
            if sub.empty:
                continue
            nonzero = sub["info_nonzero_per_unit"].mean() if "info_nonzero_per_unit" in sub else np.nan
            rows.append({"layer": layer, "stitch": stitch, "pairs": len(sub),
                         "penalty_mean": sub["penalty"].mean(),
                         "penalty_std": sub["penalty"].std(ddof=1) if len(sub) > 1 else np.nan,
                         "stitched_accuracy_mean": sub["accuracy"].mean(),
                         "accuracy_b_mean": sub["accuracy_b"].mean(),
                         "nonzero_per_unit": nonzero if stitch == "sparse" else np.nan})
    return pd.DataFrame(rows)

"""Rule `connectivity`: align net B to net A two ways, then walk the straight line between them.

For one seed pair: the permutation groups of the architecture (from its fx graph), weight
matching (Ainsworth et al. 2023, Algorithm 1) and activation matching (per group, the
bipartite matching of units by correlation over the probe images), a check that each aligned
B' computes B's function, and the loss and accuracy of ``(1 − α)·θ_A + α·θ_B'`` on held-out
images for B' = B unaligned, weight-matched and activation-matched, with batch-norm statistics
reset on training images at every α (Jordan et al. 2023). Writes the permutations (JSON) and
the curves (CSV, one row per alignment and α).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from convergent.connectivity import alpha_grid, barrier, dataset_batches, has_batch_norm, interpolation_curve
from convergent.data import load_dataset, probe_set
from convergent.device import resolve_device
from convergent.alignment import activation_matching, weight_matching
from convergent.permutation import derive_spec, permute_state
from convergent.outputs import atomic_output
from convergent.models import channel_adapter, expected_channels
from convergent.training import load_checkpoint

ALIGNMENTS = ("none", "weight", "activation")


def check_function(model, state_b_aligned, state_b, x) -> float:
    """Largest |Δ logit| between B and the aligned B', relative to B's largest |logit|."""
    with torch.no_grad():
        model.load_state_dict(state_b)
        reference = model.eval()(x)
        model.load_state_dict(state_b_aligned)
        aligned = model.eval()(x)
    return float((aligned - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def main(inputs, outputs, params, log):
    cfg = params.cfg
    a, b = params.pair
    device = resolve_device(cfg["device"])
    model_a, _ = load_checkpoint(inputs.a)
    model_b, _ = load_checkpoint(inputs.b)
    splits = load_dataset(params.dataset)
    probe, _ = probe_set(splits, params.dataset)
    prepare = channel_adapter(splits.in_channels, expected_channels(model_a))
    probe_inputs = dataset_batches(probe, cfg["batch_size"], labels=False, prepare=prepare)
    example = next(probe_inputs())[:2]

    spec = derive_spec(model_a, example)
    print(f"seeds {a} -> {b}: {len(spec.groups)} permutation groups "
          f"({', '.join(f'{n} [{g.size}]' for n, g in spec.groups.items())})")
    for name, why in spec.fixed.items():
        print(f"  {name}: not permutable: {why}")

    # copies: a model's state_dict() aliases its weights, which interpolation overwrites
    state_a = {k: v.detach().clone() for k, v in model_a.state_dict().items()}
    state_b = {k: v.detach().clone() for k, v in model_b.state_dict().items()}
    weight_perms, weight_info = weight_matching(state_a, state_b, spec, max_iter=cfg["max_sweeps"],
                                                seed=cfg["seed"], log=print)
    activation_perms, activation_info = activation_matching(model_a, model_b, spec, probe_inputs(), device,
                                                          cfg["positions_per_image"], cfg["seed"], log=print)
    perms = {"none": spec.identity(), "weight": weight_perms, "activation": activation_perms}
    aligned = {name: permute_state(state_b, spec, p) for name, p in perms.items()}

    check = example.to(device)
    worst = {name: check_function(model_b.to(device), aligned[name], state_b, check) for name in ALIGNMENTS}
    print("aligned B' against B, max |Δ logit| / max |logit|: "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    if max(worst.values()) > 1e-4:
        raise RuntimeError(f"an aligned network does not compute B's function ({worst}): "
                           "the permutation groups of this architecture are wrong")

    eval_batches = dataset_batches(splits.heldout, cfg["batch_size"], cfg["eval_images"], seed=cfg["seed"],
                                   prepare=prepare)
    reset_batches = None
    if cfg["reset_images"] > 0 and has_batch_norm(model_b):
        reset_batches = dataset_batches(splits.train, cfg["batch_size"], cfg["reset_images"], labels=False,
                                        seed=cfg["seed"], prepare=prepare)
    alphas = alpha_grid(cfg["alphas"])
    print(f"interpolating on {eval_batches.size} held-out images, {len(alphas)} values of alpha"
          + (f", batch-norm statistics reset on {reset_batches.size} training images at every alpha" if reset_batches
             else ", no batch-norm statistics to reset" if not has_batch_norm(model_b) else ", no batch-norm reset"))
    model = model_b.to(device)
    rows = []
    for name in ALIGNMENTS:
        print(f"alignment {name}:")
        curve = interpolation_curve(model, state_a, aligned[name], alphas, eval_batches, reset_batches,
                                    device, log=print)
        losses = [r["loss"] for r in curve]
        accuracies = [r["accuracy"] for r in curve]
        print(f"  barrier: loss {barrier(alphas, losses):.4f}, accuracy {barrier(alphas, accuracies, True):.4f}")
        rows += [{"a": a, "b": b, "alignment": name, **r} for r in curve]
    frame = pd.DataFrame(rows)
    with atomic_output(outputs.curves) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")

    groups = {}
    for name, group in spec.groups.items():
        w, act = perms["weight"][name], perms["activation"][name]
        groups[name] = {"size": group.size, "weight": np.asarray(w).tolist(), "activation": np.asarray(act).tolist(),
                        "agreement": float(np.mean(np.asarray(w) == np.asarray(act))),
                        "activation_correlation": activation_info["mean_correlation"][name]}
    record = {"a": a, "b": b, "convention": "B'[..., i, ...] = B[..., perm[i], ...] along every axis of the group",
              "groups": groups, "fixed": spec.fixed, "weight_matching": weight_info,
              "function_check": worst}
    with atomic_output(outputs.alignment) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

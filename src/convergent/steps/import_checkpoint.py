"""Rule `import_checkpoint`: bring a network trained elsewhere into the pipeline.

Accepts a convergent checkpoint or a plain ``state_dict`` for the configured architecture; the
weights are loaded strictly (every key must match) and the held-out accuracy is measured here, so
the rest of the pipeline treats the network exactly like one it trained.
"""

import json
import time

import torch

from convergent.data import load_dataset
from convergent.models import build_model
from convergent.outputs import atomic_output
from convergent.training import atomic_save, checkpoint_payload, evaluate, read_foreign_state_dict


def main(inputs, outputs, params, log):
    seed = int(params.seed)
    splits = load_dataset(params.dataset)
    model = build_model(params.architecture, splits.in_channels, splits.num_classes, splits.image_size)
    state = read_foreign_state_dict(inputs.checkpoint)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {inputs.checkpoint} (config key 'checkpoints.{seed}') does not fit architecture "
            f"'{params.architecture}': missing keys {list(missing)[:8]}, unexpected keys {list(unexpected)[:8]}"
        )
    began = time.perf_counter()
    accuracy = evaluate(model, splits.heldout, torch.device("cpu"))
    metrics = {"seed": seed, "architecture": params.architecture, "dataset": splits.name,
               "epochs": None, "heldout_accuracy": accuracy, "train_accuracy": None,
               "seconds": time.perf_counter() - began, "trained": True,
               "imported_from": str(inputs.checkpoint), "history": []}
    atomic_save(checkpoint_payload(model, params.architecture, splits, seed, metrics), outputs.model)
    with atomic_output(outputs.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    print(f"imported {inputs.checkpoint}: held-out accuracy {accuracy:.4f}")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Rule `untrained`: a randomly initialised network of the same architecture, the chance baseline."""

import json

from convergent.data import load_dataset
from convergent.models import build_model
from convergent.outputs import atomic_output
from convergent.training import atomic_save, checkpoint_payload, evaluate, seed_everything


def main(inputs, outputs, params, log):
    seed = int(params.seed)
    splits = load_dataset(params.dataset)
    seed_everything(seed)
    model = build_model(params.architecture, splits.in_channels, splits.num_classes, splits.image_size)
    import torch

    metrics = {"seed": seed, "architecture": params.architecture, "dataset": splits.name, "epochs": 0,
               "heldout_accuracy": evaluate(model, splits.heldout, torch.device("cpu")),
               "train_accuracy": None, "seconds": 0.0, "trained": False, "history": []}
    atomic_save(checkpoint_payload(model, params.architecture, splits, seed, metrics), outputs.model)
    with atomic_output(outputs.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

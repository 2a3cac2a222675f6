"""Rule `untrained`: a randomly initialised network of the same architecture, the chance baseline
(never pretrained weights, whatever `model.weights` says)."""

import json

import torch

from convergent.architectures import describe_source
from convergent.data import load_dataset
from convergent.models import load_model
from convergent.outputs import atomic_output
from convergent.provenance import environment
from convergent.training import atomic_save, checkpoint_payload, heldout_accuracy, seed_everything


def main(inputs, outputs, params, log):
    seed = int(params.seed)
    if params.model.get("huggingface") is not None:  # fresh weights from the language model's config
        from convergent.language_models import untrained_seed

        payload, metrics = untrained_seed(params.model, params.dataset, seed)
        atomic_save(payload, outputs.model)
        with atomic_output(outputs.metrics) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2))
        return
    splits = load_dataset(params.dataset)
    seed_everything(seed)
    model = load_model(params.model, splits.geometry, pretrained=False).module
    accuracy, note = heldout_accuracy(model, splits, torch.device("cpu"))
    metrics = {"seed": seed, "architecture": describe_source(params.model), "dataset": splits.name, "epochs": 0,
               "heldout_accuracy": accuracy, "train_accuracy": None, "seconds": 0.0, "trained": False,
               "history": [], "environment": environment("cpu")}
    if note:
        print(note)
    atomic_save(checkpoint_payload(model, params.model, splits, seed, metrics), outputs.model)
    with atomic_output(outputs.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

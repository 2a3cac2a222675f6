"""Rule `import_checkpoint`: bring a network trained elsewhere into the pipeline.

Accepts a convergent checkpoint, or the weights of the configured model in any common file
(``.pt``/``.pth`` state_dicts, ``.safetensors``; see :mod:`convergent.checkpoints`). The weights are
loaded strictly (missing, unexpected and mis-shaped keys are named) and the held-out accuracy is
measured here, so the rest of the pipeline treats the network exactly like one it trained.
"""

import json
import time

import torch

from convergent.architectures import describe_source
from convergent.data import load_dataset
from convergent.models import load_model
from convergent.outputs import atomic_output
from convergent.provenance import environment
from convergent.training import atomic_save, checkpoint_payload, heldout_accuracy


def main(inputs, outputs, params, log):
    seed = int(params.seed)
    if params.model.get("huggingface") is not None:  # a language model's seed: hub id or directory
        from convergent.language_models import import_seed

        payload, metrics, note = import_seed(params.model, params.dataset, params.checkpoint, seed)
        atomic_save(payload, outputs.model)
        with atomic_output(outputs.metrics) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2))
        print(f"imported {params.checkpoint}; {note}")
        return
    splits = load_dataset(params.dataset)
    loaded = load_model(params.model, splits.geometry, checkpoint=inputs.checkpoint,
                        checkpoint_key=f"checkpoints.{seed}")
    began = time.perf_counter()
    accuracy, note = heldout_accuracy(loaded.module, splits, torch.device("cpu"))
    metrics = {"seed": seed, "architecture": describe_source(params.model), "dataset": splits.name,
               "epochs": None, "heldout_accuracy": accuracy, "train_accuracy": None,
               "seconds": time.perf_counter() - began, "trained": True,
               "imported_from": str(inputs.checkpoint), "history": [], "environment": environment("cpu")}
    atomic_save(checkpoint_payload(loaded.module, params.model, splits, seed, metrics), outputs.model)
    with atomic_output(outputs.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    print(f"imported {inputs.checkpoint}: " + (note or f"held-out accuracy {accuracy:.4f}"))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

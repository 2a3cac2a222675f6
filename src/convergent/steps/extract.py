"""Rule `extract`: run the probe set through one network and write its activation HDF5."""

import math

import torch

from convergent.config import config_hash
from convergent.data import load_dataset, probe_set
from convergent.extraction import extract_activations
from convergent.models import load_model
from convergent.progress import RateLog
from convergent.training import select_device


def main(inputs, outputs, params, log):
    if params.dataset["name"] == "text":
        return extract_text(inputs, outputs, params)
    splits = load_dataset(params.dataset)
    probe, image_index = probe_set(splits, params.dataset)
    # Real probe images settle the layers' layouts; three, so no other dimension looks like the batch.
    first = torch.stack([probe[i][0] for i in range(min(3, len(probe)))])
    loaded = load_model(params.model, splits.geometry, checkpoint=inputs.model, probes=True, probe_inputs=first)
    if list(loaded.probes) != list(params.layers):
        raise RuntimeError(f"the model's layers {list(loaded.probes)} are not the planned {list(params.layers)}; "
                           "rerun snakemake so that it plans them again")
    record = loaded.record
    accuracy = record["metrics"].get("heldout_accuracy")
    attrs = {
        "architecture": record["architecture"],
        "seed": int(record["seed"]),
        "trained": bool(record["metrics"].get("trained", True)),
        "dataset": splits.name,
        "accuracy": math.nan if accuracy is None else float(accuracy),
        "config_hash": config_hash({"extract": params.extract, "dataset": params.dataset}),
    }
    print(f"probing {len(loaded.probes)} layers of {loaded.name}: "
          + ", ".join(f"{n} ({p.kind} {list(p.shape)}, {p.via})" for n, p in loaded.probes.items()))
    extract_activations(loaded.module, probe, image_index, loaded.probes, outputs.activations, params.extract, attrs,
                        splits.in_channels, splits.image_size, select_device(params.extract["device"]),
                        prepare=loaded.prepare, progress=RateLog(f"extract {loaded.name}, probe batches"))


def extract_text(inputs, outputs, params):
    """Probe text through a language model: every seed tokenizes with the model source's tokenizer."""
    from convergent.huggingface import load_tokenizer, tokenizer_source
    from convergent.text import load_text_probe
    from convergent.text_extraction import extract_text_activations

    probe = load_text_probe(params.dataset, load_tokenizer(*tokenizer_source(params.model)))
    loaded = load_model(params.model, probe.geometry, checkpoint=inputs.model, probes=True,
                        probe_inputs=probe.batch(0, min(3, len(probe))))
    if list(loaded.probes) != list(params.layers):
        raise RuntimeError(f"the model's layers {list(loaded.probes)} are not the planned {list(params.layers)}; "
                           "rerun snakemake so that it plans them again")
    record = loaded.record
    attrs = {
        "architecture": record["architecture"],
        "seed": int(record["seed"]),
        "trained": bool(record["metrics"].get("trained", True)),
        "dataset": "text",
        "accuracy": math.nan,
        "config_hash": config_hash({"extract": params.extract, "dataset": params.dataset}),
    }
    print(f"probing {len(loaded.probes)} layers of {loaded.name} on {len(probe)} passages of "
          f"{probe.image_size} tokens ({int(probe.valid.sum())} sampleable): "
          + ", ".join(f"{n} ({p.kind} {list(p.shape)})" for n, p in loaded.probes.items()))
    extract_text_activations(loaded.module, probe, loaded.probes, outputs.activations, params.extract, attrs,
                             select_device(params.extract["device"]),
                             progress=RateLog(f"extract {loaded.name}, probe batches"))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

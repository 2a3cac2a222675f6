"""Rule `extract`: run the probe set through one network and write its activation HDF5."""

from convergent.config import config_hash
from convergent.data import load_dataset, probe_set
from convergent.extraction import extract_activations
from convergent.architectures import select_layers
from convergent.training import load_checkpoint, select_device


def main(inputs, outputs, params, log):
    model, record = load_checkpoint(inputs.model)
    splits = load_dataset(params.dataset)
    probe, image_index = probe_set(splits, params.dataset)
    layers = select_layers(record["architecture"], params.layers)
    attrs = {
        "architecture": record["architecture"],
        "seed": int(record["seed"]),
        "trained": bool(record["metrics"].get("trained", True)),
        "dataset": splits.name,
        "accuracy": float(record["metrics"]["heldout_accuracy"]),
        "config_hash": config_hash({"extract": params.extract, "dataset": params.dataset}),
    }
    extract_activations(model, probe, image_index, layers, outputs.activations, params.extract, attrs,
                        splits.in_channels, splits.image_size, select_device(params.extract["device"]))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

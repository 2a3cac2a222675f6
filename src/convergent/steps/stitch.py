"""Rule `stitch`: model stitching of one seed pair at every stitched layer, three ways.

A's layers up to the cut (a zoo probe point, or the module or FX node a layer names in
`model.layers`) feed B's layers after it through (1) a trained stitching layer (Bansal
et al. 2021: 1×1 conv + batch norm, or linear; both networks frozen), (2) the pipeline's
bipartite matching of the layer as a permutation (Li et al. 2016 §3.1), (3) Li et al.'s §4 sparse
L1 map fitted on training images. Writes one row per layer and stitch with the stitched
accuracy and the penalty (B's accuracy minus it) on held-out images.
"""

import pandas as pd
import torch

from convergent.connectivity import dataset_batches, shuffled_batches
from convergent.data import load_dataset
from convergent.device import resolve_device
from convergent.matching import read_match_csv
from convergent.models import channel_adapter, expected_channels
from convergent.outputs import atomic_output
from convergent.stitching import stitch_layers
from convergent.training import load_checkpoint


def main(inputs, outputs, params, log):
    cfg = params.cfg
    a, b = params.pair
    layers = list(params.layers)
    device = resolve_device(cfg["device"])
    model_a, _ = load_checkpoint(inputs.a)
    model_b, _ = load_checkpoint(inputs.b)
    splits = load_dataset(params.dataset)
    partners = {layer: read_match_csv(path)["match_partner"].to_numpy()
                for layer, path in zip(layers, inputs.matching)}
    prepare = channel_adapter(splits.in_channels, expected_channels(model_a))
    fit = dataset_batches(splits.train, cfg["batch_size"], cfg["fit_images"], labels=False, seed=cfg["seed"],
                          prepare=prepare)
    train = shuffled_batches(splits.train, cfg["batch_size"], cfg["seed"], prepare=prepare)
    held_out = dataset_batches(splits.heldout, cfg["batch_size"], cfg["eval_images"], seed=cfg["seed"],
                               prepare=prepare)
    print(f"stitching seed {a} (bottom) into seed {b} (top) at {layers}: maps fitted on {fit.size} training "
          f"images, stitching layers trained for {cfg['steps']} steps of {cfg['batch_size']}, "
          f"evaluated on {held_out.size} held-out images")
    torch.manual_seed(cfg["seed"])
    rows = stitch_layers(model_a, model_b, layers, partners, fit, train, held_out, decay=cfg["sparse_decay"],
                         steps=cfg["steps"], lr=cfg["lr"], device=device,
                         positions=cfg["positions_per_image"], seed=cfg["seed"], log=print,
                         targets=dict(getattr(params, "targets", None) or {}))
    frame = pd.DataFrame(rows)
    frame.insert(0, "a", a)
    frame.insert(1, "b", b)
    with atomic_output(outputs.csv) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

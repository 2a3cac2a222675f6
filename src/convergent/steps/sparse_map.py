"""Rule `sparse_map`: sparse one-to-many mapping of one layer for one seed pair (Li ICLR §4).

One streamed pass over the pair's paired activations builds the second moments of a training
and a validation split (whole probe images go to one side); every decay of the grid is then
fitted and scored from those moments alone. Writes one row per decay: validation loss and
mean non-zero weights per unit of net b (see `convergent.sparse_mapping`).
"""

import numpy as np

from convergent.activations import check_paired, iter_sample_chunks, layer_attrs, read_positions
from convergent.outputs import atomic_output
from convergent.progress import RateLog
from convergent.sparse_mapping import Moments, decay_grid, sparse_mapping, split_validation


def pair_moments(path_a, path_b, layer, val_mask, chunk_rows):
    """Moments of the training and validation rows, streamed chunk by chunk from both files."""
    train = val = None
    start = 0
    for xa, xb in zip(iter_sample_chunks(path_a, layer, chunk_rows), iter_sample_chunks(path_b, layer, chunk_rows)):
        xa, xb = np.asarray(xa, np.float64), np.asarray(xb, np.float64)
        if train is None:  # shift by the first chunk's means: see Moments
            shift_a, shift_b = xa.mean(0), xb.mean(0)
            p, m = xa.shape[1], xb.shape[1]
            empty = np.zeros((0, p)), np.zeros((0, m))
            train = val = Moments.of(*empty, shift_a, shift_b)
        mask = val_mask[start:start + len(xa)]
        train = train + Moments.of(xa[~mask], xb[~mask], shift_a, shift_b)
        val = val + Moments.of(xa[mask], xb[mask], shift_a, shift_b)
        start += len(xa)
    if start != len(val_mask):
        raise ValueError(f"{path_a}, {path_b}: read {start} rows of {layer}, expected {len(val_mask)}")
    return train, val


def main(inputs, outputs, params, log):
    cfg, layer = params.cfg, params.layer
    a, b = params.pair
    check_paired([inputs.a, inputs.b], layer)
    n_rows = int(layer_attrs(inputs.a, layer)["n_samples"])
    positions = read_positions(inputs.a, layer)
    images = positions[:, 0] if positions is not None else np.arange(n_rows)  # fc: a row is an image
    val_mask = split_validation(images, cfg["validation_fraction"], cfg["split_seed"])
    print(f"{layer} {a}->{b}: reading {n_rows} paired rows", flush=True)
    train, val = pair_moments(inputs.a, inputs.b, layer, val_mask, cfg["chunk_rows"])
    fine = cfg["fine_grid"]
    decays = decay_grid(cfg["decays"], None if fine is None else (fine["start"], fine["stop"], fine["step"]))
    table = sparse_mapping(train, val, decays=decays, decay_scale=cfg["decay_scale"],
                           tol=cfg["tol"], max_iter=cfg["max_iter"],
                           progress=RateLog(f"{layer} {a}->{b} sparse map, fits of (decay, unit of {b}) "
                                            f"over {len(decays)} decays"))
    info = table.attrs
    table.insert(0, "layer", layer)
    table.insert(1, "a", a)
    table.insert(2, "b", b)
    for key in ("n_sources", "n_targets", "n_dead_sources", "n_dead_targets", "n_train", "n_val"):
        table[key] = info[key]
    with atomic_output(outputs.csv) as tmp:
        table.to_csv(tmp, index=False)
    print(f"{layer} {a}->{b}: {info['n_train']} training / {info['n_val']} validation rows, "
          f"{info['n_sources']} -> {info['n_targets']} units (dead: {info['n_dead_sources']} / "
          f"{info['n_dead_targets']})")
    for row in table.itertuples():
        print(f"  decay {row.decay:.2e} (alpha {row.alpha:.3g}): loss {row.loss:.3f}, "
              f"non-zeros {row.nonzero:.1f} (|w|>0.01: {row.nonzero_001:.1f})"
              + ("" if row.converged else f"  NOT CONVERGED, gap {row.max_gap:.1e}"))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

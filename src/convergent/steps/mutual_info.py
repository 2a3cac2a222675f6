"""Rule `mutual_info`: mutual information of every unit pair of one layer for one seed pair (Li §3.2).

Draws ``samples`` random paired rows (footnote 6: 60,000), bins each unit into 5 % percentile bins
plus the zero bin (only for layers without negative values: a signed layer has no ReLU zeros to
set apart, and gets percentile bins over all its values), and computes the plug-in estimate for
all pairs at once; then matches the units by mutual information exactly as `match` does by
correlation.
"""

import numpy as np

from convergent.activations import check_paired, is_signed, layer_attrs, read_samples
from convergent.device import resolve_device
from convergent.matching import match_frame, summarize_match, write_match_csv
from convergent.mutual_information import mutual_information
from convergent.outputs import atomic_output
from convergent.progress import RateLog
from convergent.sampling import sample_rows, seeded_rng


def main(inputs, outputs, params, log):
    cfg, layer = params.cfg, params.layer
    a, b = params.pair
    check_paired([inputs.a, inputs.b], layer)
    n_rows = layer_attrs(inputs.a, layer)["n_samples"]
    rows = sample_rows(n_rows, cfg["samples"], seeded_rng(cfg["seed"]))
    x, y = read_samples(inputs.a, layer, rows), read_samples(inputs.b, layer, rows)
    rows = np.arange(n_rows) if rows is None else rows
    device = resolve_device(cfg["device"])
    signed = is_signed(inputs.a, layer) or is_signed(inputs.b, layer)
    zero_threshold = None if signed else cfg["zero_threshold"]
    mi = mutual_information(x, y, n_samples=None, n_bins=cfg["bins"], zero_threshold=zero_threshold,
                            block_units=cfg["block_units"], device=device, threads=params.threads,
                            progress=RateLog(f"{layer} {a}-{b} mutual information, {cfg['block_units']}-unit blocks "
                                             "(binning, then block pairs)"))
    dead_a, dead_b = np.isnan(mi).all(axis=1), np.isnan(mi).all(axis=0)
    with atomic_output(outputs.mi) as tmp:
        np.savez_compressed(tmp, mi=mi, rows=rows, dead_a=dead_a, dead_b=dead_b, pair=np.array([a, b]),
                            bins=cfg["bins"], zero_threshold=np.nan if signed else cfg["zero_threshold"],
                            zero_bin=not signed, layer=layer)
    frame = match_frame(mi, dead_a, dead_b)
    write_match_csv(frame, outputs.matching)
    s = summarize_match(frame)
    binning = "percentile bins only (signed layer)" if signed else "percentile bins + zero bin"
    print(f"{layer} {a}-{b}: {len(rows)} of {n_rows} rows on {device}, {binning}; MI semi {s['semi']:.3f} nats, "
          f"matching {s['matching']:.3f} nats, overlap {s['overlap']:.1%}; "
          f"units constant over the sample: {int(dead_a.sum())} in {a}, {int(dead_b.sum())} in {b}")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

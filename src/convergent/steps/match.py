"""Rule `match`: semi-matching and bipartite matching of one layer for every seed pair (Li §3.1).

Reads each pair's between-net correlation block from the layer's joint statistics and writes,
per pair, one row per unit of net a: partners and correlations under both assignments; dead
units (zero variance, in either net) are flagged and never matched. One job per layer rather
than per pair: the statistics file is shared and the matching itself takes milliseconds, so
per-pair jobs would spend their time starting Python.
"""

from convergent.correlation import LayerStats
from convergent.matching import match_frame, summarize_match, write_match_csv


def main(inputs, outputs, params, log):
    stats = LayerStats.load(inputs.stats)
    for (a, b), path in zip(params.pairs, outputs.csv, strict=True):
        pair = stats.pair(a, b)
        frame = match_frame(pair.corr_ab, pair.dead_a, pair.dead_b)
        write_match_csv(frame, path)
        s = summarize_match(frame)
        print(f"{stats.layer} {a}-{b}: semi {s['semi']:.3f}, matching {s['matching']:.3f}, "
              f"overlap {s['overlap']:.1%}; dead units: {s['dead_a']} in {a}, {s['dead_b']} in {b}")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Rule `subspace`: Wang et al. 2018 maximum matching similarity s(ε) and simple matches of one
layer, for every seed pair and for the trained-vs-untrained baseline pairs.

One job per layer (like `match`): each network's activations are read once and shared by all
its pairs, and small layers take milliseconds per pair, so per-pair jobs would mostly spend
their time starting Python. Conv layers: s(ε) is averaged over `repeats` draws of `sample_size`
positions (the same rows for every pair; token layers alike); vector layers use every probe input. Simple matches
(randomized Algorithm 2, `restarts` runs per neuron, §5.2) are computed for the trained pairs in
`simple_pairs` only, on the first draw, shared out to the job's `threads` processes, and only where
the draw has `min_rows_per_unit` rows per live unit (fewer rows make s(ε) a property of the sample: flagged in the results, warned here).

The log says which pair and which stage it is in, with a rate and the time left, as it goes.
"""

import warnings

from convergent.activations import layer_attrs, read_samples
from convergent.subspace_layers import UndersampledWarning, compare_layer
from convergent.subspace_results import write_pair_result
from convergent.subspace_simple import RateLog


def main(inputs, outputs, params, log):
    cfg, layer = params.cfg, params.layer
    paths = dict(zip(params.nets, inputs.acts, strict=True))
    cache = {}

    def samples(net):
        if net not in cache:
            cache[net] = read_samples(paths[net], layer)
        return cache[net]

    # Wang et al.'s two cases: vectors use every probe input; maps and token sequences sample rows.
    kind = "fc" if layer_attrs(paths[params.nets[0]], layer)["kind"] == "vector" else "conv"
    simple_eps = cfg["eps"] if cfg["simple_eps"] is None else cfg["simple_eps"]
    with_simple = {tuple(p) for p in params.simple_pairs}
    for k, ((a, b), path) in enumerate(zip(params.pairs, outputs.h5, strict=True)):
        print(f"{layer}: pair {k + 1}/{len(params.pairs)}, {a}-{b}", flush=True)
        stages = {}

        def progress(stage, done, total, a=a, b=b, stages=stages):
            if stage not in stages:
                stages[stage] = RateLog(f"{layer} {a}-{b} {stage}")
            stages[stage](done, total)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UndersampledWarning)
            result = compare_layer(
                samples(a), samples(b), layer=layer, a=a, b=b, kind=kind, eps_grid=cfg["eps"],
                sample_size=cfg["sample_size"], repeats=cfg["repeats"], seed=cfg["sample_seed"],
                simple_eps=simple_eps if (a, b) in with_simple else (), restarts=cfg["restarts"],
                min_rows_per_unit=cfg["min_rows_per_unit"], device=cfg["device"],
                progress=progress, workers=getattr(params, "threads", 1))
        for w in caught:
            print(f"WARNING: {w.message}", flush=True)
        write_pair_result(result, path)
        mean = result.similarity.mean(0)
        print(f"{layer} {a}-{b}: d={result.sample_size} x {result.repeats} repeats "
              f"({result.rows_per_unit:.1f} rows per live unit"
              + (", UNDERSAMPLED: s(eps) inflated by the sample" if result.undersampled else "")
              + "); s(eps) " + ", ".join(f"{e:g}: {s:.3f}" for e, s in zip(result.eps, mean))
              + f"; dead units {result.dropped_x.max()} / {result.dropped_y.max()}"
              + "".join(f"; {len(v[2])} simple matches at {e:g}" for e, v in result.simple.items()),
              flush=True)


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

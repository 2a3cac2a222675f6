"""Rule `similarity`: every whole-layer similarity measure for one pair of networks, same layer and
across layers, with a permutation null (see `convergent.network_similarity`), as one long CSV."""

from convergent.network_similarity import compare_pair
from convergent.outputs import atomic_output
from convergent.progress import RateLog


def main(inputs, outputs, params, log):
    layers = list(params.layers)
    stats = dict(zip(layers, inputs.stats)) if params.kind == "trained" else None
    frame = compare_pair(inputs.a, inputs.b, layers, params.cfg, params.kind, params.net_a, params.net_b,
                         stats=stats, seeds=tuple(params.seeds) if stats else None,
                         progress=RateLog(f"{params.net_a}-{params.net_b} similarity, evaluations of "
                                          f"{len(params.cfg['measures'])} measures ({len(layers)} layers x "
                                          f"{1 + params.cfg['permutations']}, then cross-layer)"))
    with atomic_output(outputs.csv) as tmp:
        frame.to_csv(tmp, index=False)


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

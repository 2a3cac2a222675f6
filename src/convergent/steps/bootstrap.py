"""Rule `bootstrap`: one layer's replicates over probe inputs for every seed pair and baseline pair,
and the first trained pair's permutation tests (convergent.replicates), for the tables' intervals."""

from convergent.replicates import layer_replicates


def main(inputs, outputs, params, log):
    paths = dict(zip(params.nets, inputs.acts, strict=True))
    result = layer_replicates(paths, [tuple(p) for p in params.pairs], params.layer, params.cfg,
                              baseline_pairs=[tuple(p) for p in params.baseline],
                              permutation_pair=tuple(params.pairs[0]), threads=params.threads)
    result.save(outputs.replicates)
    over = f"{result.n_blocks} blocks of probe inputs" if result.n_blocks else result.block_note
    print(f"{params.layer}: {result.replicates} replicates over {over}; {len(result.pairs)} pairs")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Rule `bootstrap_subspace`: one layer's replicates of Wang et al.'s s(eps) over blocks of probe
inputs, for every seed pair and baseline pair of the s(eps) table (convergent.replicates, with
the `bootstrap` rule's draws), so that table's intervals are over seeds and inputs."""

from convergent.replicates import layer_replicates, subspace_measure


def main(inputs, outputs, params, log):
    paths = dict(zip(params.nets, inputs.acts, strict=True))
    measures = [subspace_measure(eps) for eps in params.eps]
    result = layer_replicates(paths, [tuple(p) for p in params.pairs], params.layer, params.cfg, measures=measures,
                              baseline_pairs=[tuple(p) for p in params.baseline], baseline_measures=measures)
    result.save(outputs.replicates)
    over = f"{result.n_blocks} blocks of probe inputs" if result.n_blocks else result.block_note
    print(f"{params.layer}: s(eps) at eps {list(params.eps)}, {result.replicates} replicates over {over}; "
          f"{len(result.pairs)} pairs")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

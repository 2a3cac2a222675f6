"""Rule `bootstrap_subspace`: one layer's bootstrap replicates of Wang et al.'s s(eps) for every
seed pair and baseline pair of the s(eps) table (convergent.replicates): blocks of probe inputs
(the `bootstrap` rule's partition) resampled within each repeat's rows of the `subspace` rule, so
the estimate is that rule's s(eps) and the table's intervals are over seeds and inputs."""

from convergent.activations import layer_attrs, read_image_index
from convergent.replicates import layer_replicates, subspace_measure


def main(inputs, outputs, params, log):
    from convergent.activations import read_positions
    from convergent.subspace_layers import row_draws

    paths = dict(zip(params.nets, inputs.acts, strict=True))
    first = inputs.acts[0]
    sub, layer = params.subspace, params.layer
    positions = read_positions(first, layer)
    n_rows = len(positions) if positions is not None else len(read_image_index(first))
    vector = layer_attrs(first, layer)["kind"] == "vector"  # Wang's fc case: every probe input, one repeat
    rows = row_draws(n_rows, None if vector else sub["sample_size"], sub["repeats"], sub["sample_seed"], layer)
    cfg = {**params.cfg, "replicates": params.cfg["subspace_replicates"]}
    measures = [subspace_measure(eps) for eps in sub["eps"]]
    result = layer_replicates(paths, [tuple(p) for p in params.pairs], layer, cfg, measures=measures,
                              baseline_pairs=[tuple(p) for p in params.baseline], baseline_measures=measures,
                              subspace_rows=rows)
    result.save(outputs.replicates)
    over = f"{result.n_blocks} blocks of probe inputs" if result.n_blocks else result.block_note
    print(f"{layer}: s(eps) at eps {list(sub['eps'])}, {result.replicates} replicates over {over}, "
          f"{len(rows)} repeat(s) of {'all' if rows[0] is None else len(rows[0])} rows; {len(result.pairs)} pairs")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Rule `bootstrap_subspace`: one layer's bootstrap replicates of Wang et al.'s s(eps) for every
seed pair and baseline pair of the s(eps) table (convergent.replicates): blocks of probe inputs
(the `bootstrap` rule's partition) resampled within each repeat's rows of the `subspace` rule, so
the estimate is that rule's s(eps) and the table's intervals are over seeds and inputs."""

from convergent.activations import layer_attrs, read_image_index
from convergent.replicates import LayerReplicates, layer_replicates, pair_name, subspace_measure


def main(inputs, outputs, params, log):
    from convergent.activations import read_positions
    from convergent.subspace_layers import row_draws
    from convergent.subspace_results import read_pair_result

    paths = dict(zip(params.nets, inputs.acts, strict=True))
    first = inputs.acts[0]
    sub, layer = params.subspace, params.layer
    flagged = [r for r in map(read_pair_result, inputs.results) if r.undersampled]
    if flagged:
        # the s(eps) table keeps undersampled layers' intervals over seeds only (a resample's repeated
        # inputs lower the rank and inflate s), so their replicates would cost and never be read
        r = flagged[0]
        note = (f"undersampled layer ({r.a}-{r.b}: {r.rows_per_unit:.1f} rows per live unit, below "
                f"{r.min_rows_per_unit:g}): s(eps) not resampled over inputs")
        pairs = [pair_name(a, b) for a, b in [*params.pairs, *params.baseline]]
        LayerReplicates.not_resampled(layer, int(params.cfg["seed"]), int(params.cfg["subspace_replicates"]), pairs,
                                      len(read_image_index(first)), note).save(outputs.replicates)
        print(f"{layer}: {note}")
        return
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

"""Rule `table_wang2018_similarity`: s(ε) per layer and ε (Wang et al. 2018 Fig. 1 as numbers):
mean and spread over seed pairs, mean spread over the conv repeats, the trained-vs-untrained
baseline, and the rows per unit with the undersampled flag."""

from convergent.subspace_results import read_pair_result, similarity_frame, summarize_similarity
from convergent.tables import write_table


def main(inputs, outputs, params, log):
    frame = similarity_frame(read_pair_result(p) for p in [*inputs.pairs, *inputs.baseline])
    table = summarize_similarity(frame, list(params.layers))
    stem = str(outputs.csv)[: -len(".csv")]
    write_table(table, stem, caption="Maximum matching similarity s(ε) per layer (Wang et al. 2018); "
                "undersampled: fewer rows d than subspace.min_rows_per_unit per unit "
                "(rows_per_unit = d / (n_x + n_y)), so s(ε) is inflated by the sample")
    flagged = table.loc[table["undersampled"].astype(bool), "layer"].unique()
    if len(flagged):
        print(f"WARNING: undersampled layers (s(eps) inflated by the sample): {', '.join(flagged)}")
    print(table.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

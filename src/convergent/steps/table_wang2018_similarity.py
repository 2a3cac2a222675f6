"""Rule `table_wang2018_similarity`: s(ε) per layer and ε (Wang et al. 2018 Fig. 1 as numbers):
mean and spread over seed pairs, mean spread over the conv repeats, and the trained-vs-untrained
baseline."""

from convergent.subspace_results import read_pair_result, similarity_frame, summarize_similarity
from convergent.tables import write_table


def main(inputs, outputs, params, log):
    frame = similarity_frame(read_pair_result(p) for p in [*inputs.pairs, *inputs.baseline])
    table = summarize_similarity(frame, list(params.layers))
    stem = str(outputs.csv)[: -len(".csv")]
    write_table(table, stem, caption="Maximum matching similarity s(ε) per layer (Wang et al. 2018)")
    print(table.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

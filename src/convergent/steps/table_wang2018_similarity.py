"""Rule `table_wang2018_similarity`: s(ε) per layer and ε (Wang et al. 2018 Fig. 1 as numbers):
mean and spread over seed pairs, mean spread over the conv repeats, the trained-vs-untrained
baseline, and the rows per unit with the undersampled flag; each mean over pairs with its
multi-bootstrap interval over seeds (`lo`, `hi`; `baseline_lo`, `baseline_hi`), pairs rebuilt from
the resampled seeds, and with the probe inputs resampled too where the `bootstrap_subspace` rule's
replicates are given (`statistics.subspace_replicates` above 0; else `s_std_repeats` is the spread over row
samples)."""

from convergent.intervals import Settings, subspace_table
from convergent.tables import write_table


def main(inputs, outputs, params, log):
    table = subspace_table([*inputs.pairs, *inputs.baseline], inputs.replicates, params.layers, params.statistics)
    settings = Settings.for_subspace(params.statistics)
    stem = str(outputs.csv)[: -len(".csv")]
    write_table(table, stem, caption="Maximum matching similarity s(ε) per layer (Wang et al. 2018); "
                "undersampled: fewer rows d than subspace.min_rows_per_unit per unit "
                "(rows_per_unit = d / (n_x + n_y)), so s(ε) is inflated by the sample; lo, hi: "
                f"{settings.level:.0%} multi-bootstrap interval of the mean over seed pairs (note: what was resampled)")
    flagged = table.loc[table["undersampled"].astype(bool), "layer"].unique()
    if len(flagged):
        print(f"WARNING: undersampled layers (s(eps) inflated by the sample): {', '.join(flagged)}")
    print(table.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

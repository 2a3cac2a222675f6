"""Rule `table_li2016_table2`: Li et al. (ICLR) Table 2, the sparse one-to-many mapping.

One row per decay; per layer the validation loss (½·MSE of standardised activations: 0 is a
perfect mapping, ½ the all-zero one), the mean number of exactly non-zero weights per unit of
net b, and the mean number with |w| > 0.01 (the original's count). With several seed pairs the
values are means over pairs.
"""

import pandas as pd

from convergent.tables import write_table


def table2(frames: list[pd.DataFrame], layers: list[str]) -> pd.DataFrame:
    """Wide Table 2 from the `sparse_map` CSVs: rows decays, three columns per layer."""
    data = pd.concat(frames, ignore_index=True)
    mean = data.groupby(["layer", "decay"], sort=False)[["loss", "nonzero", "nonzero_001"]].mean()
    decays = sorted(data.decay.unique())
    table = pd.DataFrame({"decay": ["0" if d == 0 else f"{d:.2e}" for d in decays]})
    for layer in layers:
        if layer not in mean.index.get_level_values("layer"):
            raise ValueError(f"no sparse mapping results for layer {layer!r}")
        rows = mean.loc[layer].reindex(decays)
        table[f"{layer} loss"] = rows["loss"].to_numpy()
        table[f"{layer} non-zero"] = rows["nonzero"].to_numpy()
        table[f"{layer} |w|>0.01"] = rows["nonzero_001"].to_numpy()
    return table


def main(inputs, outputs, params, log):
    frames = [pd.read_csv(path) for path in inputs.csv]
    table = table2(frames, list(params.layers))
    pairs = sorted({(int(f.a.iloc[0]), int(f.b.iloc[0])) for f in frames})
    caption = (f"Sparse one-to-many mapping (Li et al. Table 2): validation loss and mean weights per "
               f"unit of net b, exact non-zeros and |w|>0.01, per L1 decay; "
               f"{'pair' if len(pairs) == 1 else 'mean over pairs'} {', '.join(f'{a}-{b}' for a, b in pairs)}.")
    write_table(table, str(outputs.csv)[: -len(".csv")], caption=caption)
    print(caption)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

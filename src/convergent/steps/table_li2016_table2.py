"""Rule `table_li2016_table2`: Li et al. (ICLR) Table 2, the sparse one-to-many mapping.

One row per decay; per layer the validation loss (½·MSE of standardised activations: 0 is a
perfect mapping, ½ the all-zero one), the mean number of exactly non-zero weights per unit of
net b, and the mean number with |w| > 0.01 (the original's count). With several seed pairs the
values are means over pairs, and each layer's loss carries its bootstrap interval over seeds
(`{layer} loss lo`, `... hi`; pairs rebuilt from the drawn seeds; the validation inputs fixed):
with one pair the note says no interval is possible.
"""

import pandas as pd

from convergent.intervals import Settings, merge_notes, pair_fields, settings_of
from convergent.tables import write_table


def table2(frames: list[pd.DataFrame], layers: list[str], settings: Settings | None = None) -> pd.DataFrame:
    """Wide Table 2 from the `sparse_map` CSVs: rows decays, three columns per layer; with
    ``settings``, the loss's ``lo``/``hi`` per layer, a ``note``, ``level`` and ``interval``."""
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
        if settings is not None:
            fields = [pair_fields({(str(a), str(b)): v for a, b, v in
                                   data[(data.layer == layer) & (data.decay == d)][["a", "b", "loss"]].itertuples(
                                       index=False)}, settings, "loss", fixed="validation inputs fixed")
                      for d in decays]
            table[f"{layer} loss lo"] = [f["lo"] for f in fields]
            table[f"{layer} loss hi"] = [f["hi"] for f in fields]
            table[f"{layer} note"] = [f["note"] for f in fields]
    if settings is not None:
        notes = [c for c in table.columns if c.endswith(" note")]
        table["note"] = [merge_notes(dict(zip(notes, row))) for row in table[notes].itertuples(index=False)]
        table = table.drop(columns=notes).assign(level=settings.level, interval=settings.label)
    return table


def main(inputs, outputs, params, log):
    frames = [pd.read_csv(path) for path in inputs.csv]
    settings = settings_of(params)
    table = table2(frames, list(params.layers), settings)
    pairs = sorted({(int(f.a.iloc[0]), int(f.b.iloc[0])) for f in frames})
    caption = (f"Sparse one-to-many mapping (Li et al. Table 2): validation loss and mean weights per "
               f"unit of net b, exact non-zeros and |w|>0.01, per L1 decay; "
               f"{'pair' if len(pairs) == 1 else 'mean over pairs'} {', '.join(f'{a}-{b}' for a, b in pairs)}"
               + (f"; loss lo, hi: {settings.level:.0%} bootstrap interval over seeds (see note)." if settings else "."))
    write_table(table, str(outputs.csv)[: -len(".csv")], caption=caption)
    print(caption)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

"""Rule `table_rogue_dimensions`: every layer's rogue dimensions (units whose mean or variance is far
above the layer's; `convergent.rogue_dimensions`), per trained network, from the streamed statistics."""

from convergent.correlation import LayerStats
from convergent.rogue_dimensions import rogue_counts, rogue_table
from convergent.tables import write_table


def main(inputs, outputs, params, log):
    cfg = params.cfg
    layers = {}
    for layer, path in zip(params.layers, inputs.stats, strict=True):
        stats = LayerStats.load(path)
        layers[layer] = (stats.seeds, stats.mean, stats.std)
    table = rogue_table(layers, cfg["rogue_variance_ratio"], cfg["rogue_mean_z"])
    write_table(table, str(outputs.csv)[: -len(".csv")],
                caption=f"Rogue dimensions: units with variance >= {cfg['rogue_variance_ratio']:g} x the layer's mean "
                        f"unit variance or a robust z-score of |mean| >= {cfg['rogue_mean_z']:g} (rogue true), and per "
                        "layer and network the unit of largest variance ratio")
    counts = rogue_counts(table, list(params.layers))
    print("rogue units per layer (most in any one network): "
          + ", ".join(f"{layer} {n}" for layer, n in counts.items()))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

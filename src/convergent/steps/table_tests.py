"""Rule `table_tests`: the papers' comparisons as tests (trained vs untrained, the permutation null,
layer-to-layer differences; Holm across layers) and the seeds a target interval width needs."""

from pathlib import Path

from convergent.intervals import Settings, load_replicates, seeds_needed_table, tests_table
from convergent.tables import write_table


def main(inputs, outputs, params, log):
    cfg = params.cfg
    settings = Settings.from_config(cfg)
    replicates = load_replicates(params.layers, inputs.replicates)
    layers = list(params.layers)
    differences = cfg["layer_differences"] or [(layers[0], other) for other in layers[1:]]
    pairs = [tuple(p) for p in params.pairs]
    baseline = [tuple(p) for p in params.baseline]
    tests = tests_table(replicates, pairs, baseline, list(params.untrained), settings,
                        [tuple(d) for d in differences], cfg["multiple_comparisons"])
    write_table(tests, Path(outputs.csv).with_suffix(""), float_format="{:.4g}",
                caption=f"Tests per layer: trained vs untrained and the layer differences by the paired "
                        f"multi-bootstrap ({settings.label}), the first pair against the permutation null; "
                        f"p-values adjusted across layers ({cfg['multiple_comparisons']}), "
                        f"reject at {1 - settings.level:g}.")
    print(tests[["test", "measure", "layer_a", "layer_b", "estimate", "lo", "hi", "p_adjusted", "reading"]]
          .to_string(index=False))
    needed = seeds_needed_table(replicates, pairs, settings, float(cfg["width"]))
    write_table(needed, Path(outputs.seeds_csv).with_suffix(""),
                caption=f"Seeds needed for a {settings.level:.0%} interval {cfg['width']:g} wide, from the "
                        "measured spread over seeds and seed pairs (and the probe inputs' floor).")
    print(needed[["layer", "measure", "estimate", "width", "seeds", "seeds_needed"]].to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

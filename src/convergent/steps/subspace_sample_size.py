"""Rule `subspace_sample_size`: s(ε) of one layer and one seed pair as the number of sampled
rows d grows (multiples of the unit count, fixed sizes, all rows).

With d near the number of units almost anything matches (n vectors nearly span R^d), so s(ε)
says more about d than about the networks; the curve shows where it settles, which is how a
user should choose `subspace.sample_size`. The threshold below which results are flagged
(`subspace.min_rows_per_unit` × (n_x + n_y)) goes into the table for the figure.
"""

from convergent.activations import read_samples
from convergent.outputs import atomic_output
from convergent.subspace_layers import sample_size_curve
from convergent.subspace_simple import RateLog


def main(inputs, outputs, params, log):
    cfg, study, layer = params.cfg, params.cfg["sample_size_study"], params.layer
    X, Y = read_samples(inputs.a, layer), read_samples(inputs.b, layer)
    n = max(X.shape[1], Y.shape[1])
    sizes = sorted({int(m * n) for m in study["multiples"]} | {int(s) for s in study["sizes"]})
    sizes = [s for s in sizes if s < len(X)] + ([None] if study["all_rows"] else [])
    frame = sample_size_curve(X, Y, sizes, layer=layer, eps_grid=cfg["eps"],
                              repeats=cfg["repeats"], seed=cfg["sample_seed"],
                              device=cfg["device"],
                              progress=RateLog(f"{layer} {params.pair[0]}-{params.pair[1]} s(eps) "
                                               f"at {len(sizes)} sample sizes, draws of rows"))
    frame.insert(0, "units_total", X.shape[1] + Y.shape[1])
    frame.insert(0, "min_rows_per_unit", cfg["min_rows_per_unit"])
    frame.insert(0, "units", n)
    frame.insert(0, "pair", f"{params.pair[0]}-{params.pair[1]}")
    frame.insert(0, "layer", layer)
    with atomic_output(outputs.csv) as tmp:
        frame.to_csv(tmp, index=False)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

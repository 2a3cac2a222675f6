"""Rule `correlate`: one streamed float64 pass over all seeds' activations of a layer."""

from convergent.correlation import joint_layer_statistics
from convergent.device import resolve_device
from convergent.progress import RateLog


def main(inputs, outputs, params, log):
    paths = list(inputs.activations)
    stats = joint_layer_statistics(paths, list(params.seeds), params.layer, params.cfg["chunk_rows"],
                                   resolve_device(params.cfg["device"]),
                                   progress=RateLog(f"correlate {params.layer}, rows of {len(paths)} nets"))
    stats.save(outputs.stats)
    dead = {int(s): int(n) for s, n in zip(stats.seeds, stats.dead.sum(1))}
    print(f"{params.layer}: {stats.units} units x {len(paths)} seeds, {stats.n_samples} samples; "
          f"dead units per seed: {dead}")


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

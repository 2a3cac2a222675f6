"""Benchmark: peak memory of `correlate` at paper size, for each layer kind, against a 4 GiB bar.

    python benchmarks/correlate_memory.py [--seeds 5] [--units 512] [--rows 100000] [--chunk-rows 65536]

Writes, for each layer kind (spatial: rows are image x position samples of a 7 x 7 map; tokens:
token positions of 128-token passages; vector: one row per probe input), one activation file per
seed in the extractor's format (float32 samples, the positions and probe index that pair them),
runs the `correlate` step on them in a fresh Python process (the rule's own code path: the
streamed float64 pass and the save) and prints that process's peak resident memory (max RSS, as
Snakemake's `benchmark:` records it) beside:

* the bar, 4 GiB (issue 14: 5 seeds x 512 units x 100,000 rows within 4 GiB), and
* what holding the layer whole would take, measured in the same run: the resident memory of a
  process that reads every seed's rows at once into one float64 matrix (the joint matrix
  `correlate` would need without streaming).

The peak depends on `correlate.chunk_rows` (the schema default, 65,536, unless ``--chunk-rows``):
each chunk is held as float32 per seed and as one float64 joint block.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
BAR_GIB = 4.0

# The step as Snakemake runs it, with its peak RSS (ru_maxrss: KiB on Linux) on the last line.
STEP = """
import resource, sys, types
from convergent.steps.correlate import main
paths, layer, chunk, out = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3]), sys.argv[4]
main(types.SimpleNamespace(activations=paths), types.SimpleNamespace(stats=out),
     types.SimpleNamespace(cfg={"chunk_rows": chunk, "device": "cpu"}, seeds=list(range(len(paths))), layer=layer),
     None)
print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
WHOLE = """
import resource, sys
import numpy as np
from convergent.activations import read_samples
paths, layer = sys.argv[1].split(","), sys.argv[2]
joint = np.hstack([read_samples(p, layer) for p in paths])
print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_layer(path: Path, seed: int, kind: str, units: int, rows: int) -> None:
    """One seed's activation file with one layer of `kind`: `rows` paired rows of `units` units."""
    rng = np.random.default_rng(seed)
    per_input = {"spatial": 20, "tokens": 100, "vector": 1}[kind]
    inputs = rows // per_input
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"layers": [kind], "seed": seed, "architecture": "synthetic"})
        h5.create_dataset("probe/image_index", data=np.arange(inputs))
        group = h5.create_group(f"layers/{kind}")
        samples = group.create_dataset("samples", shape=(inputs * per_input, units), dtype=np.float32)
        for start in range(0, samples.shape[0], 20000):
            block = rng.standard_normal((min(20000, samples.shape[0] - start), units), dtype=np.float32)
            samples[start:start + len(block)] = np.maximum(block, 0) if kind == "spatial" else block
        shape = {"spatial": (units, 7, 7), "tokens": (units, 128, 1), "vector": (units, 1, 1)}[kind]
        if kind != "vector":
            pick = np.random.default_rng(0)  # the same positions in every seed's file: rows are paired
            flat = np.stack([np.sort(pick.choice(shape[1] * shape[2], per_input, replace=False))
                             for _ in range(inputs)])
            image = np.repeat(np.arange(inputs), per_input)
            group.create_dataset("positions", data=np.stack([image, flat.ravel() // shape[2],
                                                             flat.ravel() % shape[2]], axis=1).astype(np.int64))
        group.attrs.update({"kind": kind, "signed": kind != "spatial", "shape": shape,
                            "layout": {"spatial": "NCHW", "tokens": "NTC", "vector": "NC"}[kind]})


def peak_gib(script: str, *args: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
    line = [x for x in result.stdout.splitlines() if x.startswith("maxrss_kib")][-1]
    return int(line.split()[1]) / 2 ** 20, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=None, help="default: the schema's correlate.chunk_rows")
    parser.add_argument("--kinds", nargs="+", default=["spatial", "tokens", "vector"])
    args = parser.parse_args()
    if args.chunk_rows is None:
        import yaml

        schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
        args.chunk_rows = schema["properties"]["correlate"]["properties"]["chunk_rows"]["default"]
    print(f"correlate: {args.seeds} seeds x {args.units} units x {args.rows:,} rows, chunk_rows {args.chunk_rows:,} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            paths = [Path(tmp) / f"{kind}_seed{s}.h5" for s in range(args.seeds)]
            for seed, path in enumerate(paths):
                write_layer(path, seed, kind, args.units, args.rows)
            joined = ",".join(map(str, paths))
            peak, seconds = peak_gib(STEP, joined, kind, str(args.chunk_rows), str(Path(tmp) / f"{kind}.h5"))
            whole, _ = peak_gib(WHOLE, joined, kind)
            worst = max(worst, peak)
            print(f"{kind:8s}: peak RSS {peak:5.2f} GiB = {peak / BAR_GIB:4.2f}x the {BAR_GIB:.0f} GiB bar "
                  f"({'within' if peak <= BAR_GIB else 'OVER'}); the layer held whole takes {whole:5.2f} GiB "
                  f"({peak / whole:4.2f}x); {seconds:.0f} s wall", flush=True)
            for path in paths:
                path.unlink()
    print(f"bar: every kind within {BAR_GIB:.0f} GiB: {'meets' if worst <= BAR_GIB else 'MISSES'} "
          f"(largest peak {worst:.2f} GiB)")


if __name__ == "__main__":
    main()

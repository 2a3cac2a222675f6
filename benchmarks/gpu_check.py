"""GPU check: every GPU path of the pipeline against its CPU result on the same inputs, timed.

    PYTHONPATH=src python benchmarks/gpu_check.py                  # on a machine with CUDA (<= 8 min)
    PYTHONPATH=src python benchmarks/gpu_check.py --device cpu --quick   # the plumbing, CPU vs CPU

Runs each check twice on the same inputs, once on ``--device`` (default ``cuda``) and once on the
CPU, and prints one table row per check: the sizes, both times, the speed-up, the largest
difference and the tolerance it must stay within.

1. training: one epoch of the small CNN on 1,024 embedded digits (16 steps), bf16 autocast on the
   device (``train.amp``) against float32 on the CPU, from the same initial weights and batches;
   tolerance: training loss within 5 % relative, held-out accuracy within 0.05 (bf16 rounds).
2. extraction: the CPU-trained network's activations of 1,000 probe images, every layer; tolerance
   max |Δ| ≤ 1e-2 × max |x| (cuDNN may use TF32 convolutions).
3. float64 statistics: streamed mean and covariance (`correlate`) of 5 × 512 units × 100,000
   rows; tolerance max |Δ corr| ≤ 1e-9.
4. mutual information: 256 × 256 units × 60,000 rows; tolerance max |Δ| ≤ 1e-9 nats (the counts
   are exact integers on both devices).
5. Algorithm 1: s(ε) over the schema's ε grid of a planted 512 + 512-unit layer, 10,000 rows;
   tolerance |Δ s| ≤ 1e-9.
6. Algorithm 2: simple matches of that layer at the schema's default ``simple_eps`` and
   ``restarts`` (the GPU runs the batched engine); tolerance: the same sets.
7. similarity measures: every measure of :mod:`convergent.similarity` on one 2,000-row pair of
   256-unit layers; only ``subspace`` has a GPU path, the others run on the CPU on both sides
   (listed as such); tolerance |Δ| ≤ 1e-9.

Targets (issue 14), judged on this script's figures: MI 256×256×60k < 1 s, simple matches
512+512 < 60 s on one GPU.

Exit status: 0 when every check is within its tolerance, 1 when one is not, 2 when ``--device``
is ``cuda`` and CUDA is not available (nothing is run: the message says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks' input generators

SIZES = {  # full (one GPU, <= 8 min with the CPU references) and --quick (the CPU plumbing test)
    "full": dict(train_images=1024, probe_images=1000, stat_nets=5, stat_units=512, stat_rows=100_000,
                 mi_units=256, mi_rows=60_000, sub_units=512, sub_rows=10_000, sim_units=256, sim_rows=2000),
    "quick": dict(train_images=128, probe_images=50, stat_nets=2, stat_units=16, stat_rows=500,
                  mi_units=12, mi_rows=400, sub_units=24, sub_rows=300, sim_units=8, sim_rows=120),
}


class Row:
    def __init__(self, name, size, t_dev, t_cpu, diff, tol, ok, note=""):
        self.name, self.size, self.t_dev, self.t_cpu = name, size, t_dev, t_cpu
        self.diff, self.tol, self.ok, self.note = diff, tol, ok, note


def sides(device):
    """The two runs of every check: ("device", the checked device) and ("cpu", "cpu"); with
    ``--device cpu`` both are CPU runs, kept apart."""
    return (("device", device), ("cpu", "cpu"))


def timed(device, fn):
    """``fn()`` and its seconds; on CUDA the queue is drained first and last."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - began


def check_training(device, size, tmp):
    from convergent.data import load_dataset
    from convergent.training import train_model

    splits = load_dataset({"name": "mnist5k", "heldout": 1000, "train_images": size["train_images"]})
    cfg = dict(epochs=1, batch_size=64, optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=5e-4, milestones=[],
               gamma=0.1, augment="none", amp=True, num_workers=0)
    runs = {}
    for side, where in sides(device):
        (model, metrics), seconds = timed(where, lambda: train_model(
            "small_cnn", splits, {**cfg, "device": where}, 0, Path(tmp) / f"resume-{side}.pt", side))
        runs[side] = model, metrics["history"][-1], seconds
    (_, dev, t_dev), (model, cpu, t_cpu) = runs["device"], runs["cpu"]
    d_loss = abs(dev["loss"] - cpu["loss"]) / cpu["loss"]
    d_acc = abs(dev["heldout_accuracy"] - cpu["heldout_accuracy"])
    steps = -(-size["train_images"] // cfg["batch_size"])
    return Row("training (bf16 autocast)", f"small_cnn, {steps} steps of 64", t_dev, t_cpu,
               f"loss {d_loss:.1e} rel, acc {d_acc:.3f}", "5e-2 rel, 0.05",
               d_loss <= 0.05 and d_acc <= 0.05), model, splits


def check_extraction(device, size, model, splits, tmp):
    import torch

    from convergent.activations import layer_names, read_samples
    from convergent.extraction import extract_activations
    from convergent.models import probe_layer_names

    probe = torch.utils.data.Subset(splits.heldout, range(size["probe_images"]))
    cfg = {"positions_per_image": 20, "position_seed": 0, "top_k": 9, "batch_size": 250, "dtype": "float32"}
    paths, times = {}, {}
    for side, where in sides(device):
        paths[side] = Path(tmp) / f"acts-{side}.h5"
        _, times[side] = timed(where, lambda: extract_activations(
            model, probe, np.arange(len(probe)), probe_layer_names("small_cnn"), paths[side], cfg, {"seed": 0},
            splits.in_channels, splits.image_size, torch.device(where)))
    worst = 0.0
    for layer in layer_names(paths["cpu"]):
        a, b = read_samples(paths["device"], layer), read_samples(paths["cpu"], layer)
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)))
    return Row("extraction", f"small_cnn, {len(probe)} images", times["device"], times["cpu"],
               f"{worst:.1e} of max", "1e-2 of max", worst <= 1e-2)


def check_statistics(device, size):
    from convergent.correlation import StreamingMoments, cov_to_corr

    n = size["stat_nets"] * size["stat_units"]
    rng = np.random.default_rng(0)
    chunks = [np.maximum(rng.normal(size=(min(20_000, size["stat_rows"]), n)), 0).astype(np.float32)
              for _ in range(-(-size["stat_rows"] // 20_000))]
    out = {}
    for side, where in sides(device):
        def run():
            moments = StreamingMoments(n, where)
            for chunk in chunks:
                moments.update(chunk)
            return cov_to_corr(moments.cov, moments.mean)[0]
        out[side] = timed(where, run)
    diff = float(np.nanmax(np.abs(out["device"][0] - out["cpu"][0])))
    return Row("float64 statistics", f"{size['stat_nets']}x{size['stat_units']} units x {size['stat_rows']:,} rows",
               out["device"][1], out["cpu"][1], f"{diff:.1e}", "1e-9", diff <= 1e-9)


def check_mutual_information(device, size):
    from convergent.mutual_information import mutual_information
    from mutual_info import synthetic_layers

    a, b = synthetic_layers(size["mi_units"], size["mi_rows"], 0)
    out = {side: timed(where, lambda: mutual_information(a, b, n_samples=None, device=where))
           for side, where in sides(device)}
    diff = float(np.nanmax(np.abs(out["device"][0] - out["cpu"][0])))
    u = size["mi_units"]
    return Row("mutual information", f"{u}x{u} units x {size['mi_rows']:,} rows", out["device"][1], out["cpu"][1],
               f"{diff:.1e}", "1e-9", diff <= 1e-9)


def check_subspace(device, size):
    from convergent.subspace import SubspaceProblem
    from subspace import defaults, layer

    cfg = defaults()
    X, Y = layer(size["sub_rows"], size["sub_units"], 0.25, 0)
    curves, matches = {}, {}
    for side, where in sides(device):
        def alg1():
            problem = SubspaceProblem(X, Y, device=where)
            return problem, problem.similarity_curve(cfg["eps"])
        (problem, curve), t1 = timed(where, alg1)
        curves[side] = np.asarray(curve, dtype=float), t1

        def alg2():
            return {eps: {(tuple(m.x), tuple(m.y)) for m in problem.simple_matches(
                eps, restarts=cfg["restarts"], seed=0).matches} for eps in cfg["simple_eps"]}
        matches[side] = timed(where, alg2)
    diff = float(np.abs(curves["device"][0] - curves["cpu"][0]).max())
    n = size["sub_units"]
    same = matches["device"][0] == matches["cpu"][0]
    count = sum(len(v) for v in matches["cpu"][0].values())
    return [Row("Algorithm 1: s(eps)", f"{n}+{n} units x {size['sub_rows']:,} rows, {len(cfg['eps'])} eps",
                curves["device"][1], curves["cpu"][1], f"{diff:.1e}", "1e-9", diff <= 1e-9),
            Row("Algorithm 2: simple matches", f"{n}+{n} units, eps {cfg['simple_eps']}, {cfg['restarts']} restarts",
                matches["device"][1], matches["cpu"][1], f"{count} matches, same={same}", "same sets", same)]


def check_similarity(device, size):
    from convergent import similarity as sim

    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(size=(size["sim_rows"], size["sim_units"])), 0)
    y = np.maximum(x @ rng.normal(size=(size["sim_units"], size["sim_units"])) / 4
                   + rng.normal(size=x.shape), 0)
    rows = []
    for name in sorted(sim.MEASURES):
        kwargs = {"device": None} if name == "subspace" else {}
        out = {}
        for side, where in sides(device):
            if name == "subspace":
                kwargs["device"] = where
            out[side] = timed(where, lambda: sim.MEASURES[name].fn(x, y, **kwargs))
        diff = abs(out["device"][0] - out["cpu"][0])
        note = "" if name == "subspace" else "CPU only: no GPU path"
        rows.append(Row(f"similarity: {name}", f"{size['sim_rows']} rows x {size['sim_units']} units",
                        out["device"][1], out["cpu"][1], f"{diff:.1e}", "1e-9", diff <= 1e-9, note))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="the device checked against the CPU (cpu: the plumbing only)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): for the test of this script")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine, so there is nothing to check; run it on a "
              "machine with a GPU (or --device cpu --quick to try the plumbing on the CPU).", file=sys.stderr)
        return 2
    size = SIZES["quick" if args.quick else "full"]
    where = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (plumbing: CPU vs CPU)"
    print(f"device: {where}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        row, model, splits = check_training(args.device, size, tmp)
        rows.append(row)
        rows.append(check_extraction(args.device, size, model, splits, tmp))
    rows.append(check_statistics(args.device, size))
    rows.append(check_mutual_information(args.device, size))
    rows += check_subspace(args.device, size)
    rows += check_similarity(args.device, size)
    head = f"{'check':32} {'size':44} {'device s':>9} {'cpu s':>9} {'speed-up':>8}  {'difference':28} " \
           f"{'tolerance':14} ok"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.name:32} {r.size:44} {r.t_dev:9.3f} {r.t_cpu:9.3f} {r.t_cpu / max(r.t_dev, 1e-9):8.1f}  "
              f"{r.diff:28} {r.tol:14} {'yes' if r.ok else 'NO'}" + (f"  ({r.note})" if r.note else ""))
    failed = [r.name for r in rows if not r.ok]
    print("all checks within tolerance" if not failed else f"OUTSIDE TOLERANCE: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: reading layers through convergent's probing vs a plain forward pass.

Extraction reads every probed layer of a network through :class:`convergent.probing.ProbeRunner`
(a torch.fx graph returning copies of the probed nodes, or forward hooks copying module outputs).
This script times, on the same model and the same batch, interleaved and repeated:

* ``model(x)``: the plain forward pass (the reference);
* ``runner(x)`` with the model's default layers (every block's output) read through torch.fx;
* the same layers read through forward hooks;

and prints the median time of each and its ratio to the plain pass. Target (issue #10): at most
1.10x on CPU for ResNet-50 at 64 px.

    PYTHONPATH=src python benchmarks/probe_overhead.py [--model resnet50 --size 64 --batch 64 --repeats 7 --threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from convergent.models import load_model
from convergent.probing import ProbeRunner, probe_batch, resolve_probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", help="a torchvision builder")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model({"torchvision": args.model}, (3, 1000, args.size), seed=0, probes=True)
    model = loaded.module.eval()
    x = probe_batch(3, args.size, n=args.batch)
    fx_probes = loaded.probes
    hook_probes = resolve_probes(model, None, probe_batch(3, args.size), mode="hooks")
    units = sum(p.units * p.shape[1] * p.shape[2] for p in fx_probes.values())
    print(f"{args.model} at {args.size} px, batch {args.batch}, {args.threads} threads: {len(fx_probes)} layers "
          f"({units:,} values per input) read")

    with ProbeRunner(model, fx_probes) as fx, ProbeRunner(model, hook_probes) as hooks, torch.no_grad():
        runs = {"plain forward": lambda: model(x), "probed (fx)": lambda: fx(x), "probed (hooks)": lambda: hooks(x)}
        out_fx, out_hooks = fx(x), hooks(x)
        assert all(torch.equal(out_fx[n], out_hooks[n]) for n in out_fx), "fx and hooks disagree"
        times = {name: [] for name in runs}
        for run in runs.values():  # warm-up
            run()
        for _ in range(args.repeats):
            for name, run in runs.items():  # interleaved, so load on a shared machine hits all alike
                began = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - began)
    reference = statistics.median(times["plain forward"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:16s} {median * 1000:8.1f} ms   {median / reference:5.3f}x")
    worst = max(statistics.median(times[n]) for n in ("probed (fx)", "probed (hooks)")) / reference
    print(f"overhead: {worst:.3f}x of the plain forward pass (target <= 1.10x)")


if __name__ == "__main__":
    main()

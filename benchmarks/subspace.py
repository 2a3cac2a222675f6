"""Subspace matching (Wang et al. 2018): fast paths against the references, one run.

    PYTHONPATH=src python benchmarks/subspace.py            # the issues' sizes
    PYTHONPATH=src python benchmarks/subspace.py --quick    # a smoke run in seconds
    PYTHONPATH=src python benchmarks/subspace.py --activations results/mnist5k-smallcnn/activations

Prints, each beside its reference measured in the same run (ratios stay meaningful on a busy
machine):

1. Algorithm 1 (n units per net, d samples): least-squares reference vs the Gram core.
2. Algorithm 2 over every neuron (smaller n): least-squares reference vs the engine, in full
   (no proof shortcut), index order as printed in the paper.
3. Simple matches of one 512+512-unit layer with d = 10,000 rows at the pipeline's default
   settings (``subspace.simple_eps`` and ``restarts`` from the config schema): today's search
   (kill-set proof, lazy trials) against the batched engine it replaced, which is timed on a
   random sample of the same runs and scaled to all of them (it would take about an hour); the
   sampled runs must return identical sets.
4. With ``--activations``: the same comparison on real activations, a wide layer made of the
   conv2-conv4 units of two trained nets per side (rows are the paired probe positions), where
   simple matches are large and the proof rarely applies.
5. With ``--trained-layer A.h5 B.h5 LAYER``: the bar itself on one layer of two trained networks
   (e.g. ResNet-18's ``layer4.1``, 512 units, from ``benchmarks/pipeline_cost.py``'s run), on the
   first row draw of the `subspace` rule (``sample_size`` rows), at the schema's defaults: wall and
   CPU time of the search alone, with ``--threads`` worker processes for the runs; and, on a
   sample of the same runs, the one-by-one search (the engine's shortcuts off) beside it, with
   identical sets.

Inputs for 1-3 are planted shared subspaces (``convergent.subspace_testing.planted_pair``) with per-block
noise drawn around ε, so Algorithm 1 needs several passes and Algorithm 2 real cascades; the
closest decision to the threshold is printed, since identity is only promised for decisions
farther from it than float64 Gram precision.
Bars: >= 30x for Algorithm 1, >= 100x for Algorithm 2 on 2 CPU cores (issue #5); simple matches
of 512+512 units at the default settings <= 2 min on 2 CPU cores (issue #14).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from convergent._subspace_batched import batched_alg2
from convergent.subspace import SubspaceProblem
from convergent.subspace_simple import SimpleMatchEngine, single_threaded
from convergent.subspace_testing import Margin, planted_pair, reference_max_match, reference_min_match

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def layer(d: int, n: int, eps: float, seed: int):
    """n X units and n Y units: planted blocks (sizes 1-5, noise around ε), broken blocks and
    private units, about half of each net in blocks that survive."""
    rng = np.random.default_rng(seed)
    blocks, broken, used = [], [], 0
    while used < 0.75 * n:
        k = int(rng.integers(1, 6))
        blocks.append(k)
        used += k
    while used < 0.85 * n:
        k = int(rng.integers(2, 5))
        broken.append(k)
        used += k
    private_x = n - used
    private_y = n - (used - len(broken))
    noise = rng.uniform(0.2 * eps, 1.6 * eps, len(blocks))
    X, Y, _ = planted_pair(d, blocks, broken=broken, private_x=private_x, private_y=private_y,
                           noise=noise, seed=seed)
    assert X.shape[1] == n and Y.shape[1] == n
    return X, Y


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def defaults() -> dict:
    """The subspace section's defaults from the config schema (what the presets inherit)."""
    props = yaml.safe_load(SCHEMA.read_text())["properties"]["subspace"]["properties"]
    return {k: v.get("default") for k, v in props.items()}


def simple_vs_batched(X, Y, eps_list, restarts, sample, device, seed=0, label=""):
    """Simple matches at each ε: today's search in full, the batched engine on ``sample`` of
    the same runs, scaled to all runs."""
    total_new = total_old = 0.0
    P, t_setup = timed(lambda: SubspaceProblem(X, Y, device=device))
    _, t_alg1 = timed(lambda: P.similarity_curve(eps_list))
    total_new += t_setup + t_alg1
    total_old += t_setup + t_alg1
    for eps in eps_list:
        sm, t_new = timed(lambda: P.simple_matches(eps, restarts=restarts, seed=seed))
        stats = P.last_engine_stats
        runs = P._runs(P.max_match(eps).match.neurons(), "random", seed, restarts)
        base = P._max_masks_cached(eps)
        rng = np.random.default_rng(1)
        pick = sorted(rng.choice(len(runs), min(sample, len(runs)), replace=False)) if runs else []
        vs = [runs[k][1] for k in pick]
        orders = [runs[k][2] for k in pick]
        with single_threaded():
            old, t_old = timed(lambda: batched_alg2(P, eps, base, vs, orders))
            new = SimpleMatchEngine(P, eps, base).run_many(vs, orders)
        same = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                   for a, b in zip(old, new))
        scaled = t_old * len(runs) / max(len(pick), 1)
        total_new += t_new
        total_old += scaled
        print(f"  eps={eps:g}: |M|={sm.max_match.match.size}, {len(runs)} runs, "
              f"{len(sm.matches)} distinct simple matches; new {t_new:.1f} s "
              f"({stats.proved} proved, {stats.searched} searched); batched engine "
              f"{t_old:.1f} s on {len(pick)} sampled runs -> {scaled:.0f} s for all; "
              f"ratio {scaled / max(t_new, 1e-9):.0f}x; sampled runs identical={same}")
    print(f"{label}: new {total_new:.1f} s in all (Gram and Algorithm 1 {t_setup + t_alg1:.1f} s),"
          f" before {total_old:.0f} s (scaled), ratio {total_old / total_new:.0f}x")
    return total_new


def real_layer(folder: Path):
    """A wide layer of real activations: conv2-conv4 of seeds 0 and 2 (X) against seeds 1 and 3
    (Y); rows pair the same probe positions in every net."""
    from convergent.activations import read_samples

    def side(seeds):
        return np.hstack([read_samples(folder / f"seed{s}.h5", layer).astype(np.float64)
                          for s in seeds for layer in ("conv2", "conv3", "conv4")])

    return side((0, 2)), side((1, 3))


def trained_layer_bar(path_a: str, path_b: str, layer_name: str, threads: int, device: str,
                      sample: int) -> None:
    """Issue #14's bar on a trained layer: simple matches at the schema's defaults, the search
    alone (Gram and Algorithm 1 timed apart), wall and CPU seconds; then, on ``sample`` of the
    same runs, the one-by-one search (every shortcut of the engine off: what the search was
    before them) beside today's, which must return identical sets."""
    from convergent.activations import read_samples
    from convergent.subspace_layers import row_draws

    torch.set_num_threads(threads)
    cfg = defaults()
    X = read_samples(path_a, layer_name).astype(np.float64)
    Y = read_samples(path_b, layer_name).astype(np.float64)
    rows = row_draws(len(X), cfg["sample_size"], 1, cfg["sample_seed"], layer_name)[0]
    if rows is not None:
        X, Y = X[rows], Y[rows]
    eps_list = cfg["simple_eps"] if cfg["simple_eps"] is not None else cfg["eps"]
    print(f"{layer_name}: {X.shape[1]}+{Y.shape[1]} units, d={len(X)} rows, simple_eps={eps_list}, "
          f"restarts={cfg['restarts']}, {threads} worker processes, device={device}")
    def cpu_now():  # this process and its finished worker processes
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    wall, cpu = time.perf_counter(), cpu_now()
    P = SubspaceProblem(X, Y, device=device)
    P.similarity_curve(eps_list)
    print(f"  Gram and Algorithm 1: {time.perf_counter() - wall:.1f} s wall, {cpu_now() - cpu:.1f} s CPU")
    total_wall = total_cpu = 0.0
    for eps in eps_list:
        wall, cpu = time.perf_counter(), cpu_now()
        sm = P.simple_matches(eps, restarts=cfg["restarts"], seed=0, workers=threads)
        w, c = time.perf_counter() - wall, cpu_now() - cpu
        total_wall, total_cpu = total_wall + w, total_cpu + c
        stats = P.last_engine_stats
        print(f"  eps={eps:g}: |M|={sm.max_match.match.size}, {len(sm.matches)} distinct simple matches, "
              f"{stats.proved} proved, {stats.searched} searched ({stats.trials} trials, {stats.chunks} "
              f"chunks accepted whole, {stats.known_stops} stopped at a known rejection): "
              f"{w:.1f} s wall, {c:.1f} s CPU")
        one_by_one_vs_today(P, eps, cfg["restarts"], sample)
    verdict = "meets" if total_wall <= 120 else "misses"
    print(f"simple matches of {layer_name} at the defaults: {total_wall:.1f} s wall, {total_cpu:.1f} s CPU; "
          f"{verdict} the bar (<= 120 s on 2 CPU cores), ratio {total_wall / 120:.2f}x the bar")


def one_by_one_vs_today(P, eps: float, restarts: int, sample: int) -> None:
    """The same ``sample`` runs (drawn at random) through the one-by-one search and today's, in
    this process: CPU seconds per run and whether every set is identical."""
    runs = P._runs(P.max_match(eps).match.neurons(), "random", 0, restarts)
    if not runs or sample <= 0:
        return
    pick = np.random.default_rng(1).choice(len(runs), min(sample, len(runs)), replace=False)
    vs, orders = [runs[k][1] for k in pick], [runs[k][2] for k in pick]
    base = P._max_masks_cached(eps)
    seconds, found = {}, {}
    with single_threaded():
        for name, shortcuts in (("one by one", dict(block=False, known_rejections=False, chunks=False)),
                                ("today", {})):
            engine = SimpleMatchEngine(P, eps, base, **shortcuts)
            t = time.process_time()
            found[name] = engine.run_many(vs, orders, prove=False)
            seconds[name] = (time.process_time() - t) / len(pick)
    same = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(found["one by one"], found["today"]))
    print(f"    {len(pick)} sampled runs: one-by-one search {1000 * seconds['one by one']:.0f} ms per run, "
          f"today {1000 * seconds['today']:.0f} ms per run (CPU), ratio "
          f"{seconds['one by one'] / seconds['today']:.1f}x; identical sets={same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n1", type=int, default=256, help="units per net, Algorithm 1")
    ap.add_argument("--d1", type=int, default=10_000, help="samples, Algorithm 1")
    ap.add_argument("--n2", type=int, default=64, help="units per net, Algorithm 2")
    ap.add_argument("--d2", type=int, default=500, help="samples, Algorithm 2")
    ap.add_argument("--n3", type=int, default=512, help="units per net, simple matches")
    ap.add_argument("--d3", type=int, default=10_000, help="samples, simple matches")
    ap.add_argument("--sample", type=int, default=30,
                    help="runs of the batched engine timed per eps (one batch on a CPU)")
    ap.add_argument("--eps", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--activations", type=Path, help="a run's activations folder (4 seeds)")
    ap.add_argument("--real-eps", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--trained-layer", nargs=3, metavar=("A_H5", "B_H5", "LAYER"),
                    help="two trained networks' activation files and a layer: the bar on real data only")
    ap.add_argument("--threads", type=int, default=2, help="worker processes for --trained-layer's runs")
    ap.add_argument("--one-by-one-sample", type=int, default=20,
                    help="runs per eps timed through the one-by-one search too (--trained-layer)")
    a = ap.parse_args()
    if a.trained_layer:
        return trained_layer_bar(*a.trained_layer, threads=a.threads, device=a.device,
                                 sample=a.one_by_one_sample)
    if a.quick:
        a.n1, a.d1, a.n2, a.d2, a.n3, a.d3, a.sample = 48, 1000, 24, 200, 64, 1000, 8
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda={torch.cuda.is_available()}, device={a.device}, eps={a.eps}")

    # one-time library start-up (LAPACK, torch kernels) is not what we measure
    Xw, Yw = layer(100, 12, a.eps, a.seed)
    SubspaceProblem(Xw, Yw, device=a.device).min_matches(None, a.eps)
    reference_min_match(Xw, Yw, ("x", 0), a.eps)

    # Algorithm 1
    X, Y = layer(a.d1, a.n1, a.eps, a.seed)
    mg = Margin()
    ref, t_ref = timed(lambda: reference_max_match(X, Y, a.eps, margin=mg))
    fast, t_fast = timed(lambda: SubspaceProblem(X, Y, device=a.device).max_match(a.eps))
    same = fast.match == ref
    print(f"Algorithm 1  n={a.n1}+{a.n1} d={a.d1}: reference {t_ref:.2f} s "
          f"({mg.solves} lstsq), fast {t_fast:.3f} s, ratio {t_ref / t_fast:.0f}x, "
          f"identical={same}, |X*|+|Y*|={fast.match.size}, closest decision {mg.closest:.1e}")

    # Algorithm 2 over every v (index order, as printed in the paper), searched in full
    X, Y = layer(a.d2, a.n2, a.eps, a.seed + 1)
    vs = [("x", i) for i in range(a.n2)] + [("y", j) for j in range(a.n2)]
    mg = Margin()
    ref, t_ref = timed(lambda: [reference_min_match(X, Y, v, a.eps, margin=mg) for v in vs])
    P = SubspaceProblem(X, Y, device=a.device)

    def full_search():
        runs = P._runs(vs, "index", None, 1)
        res = P._alg2(a.eps, P._max_masks_cached(a.eps), [i for _, i, _ in runs],
                      [o for _, _, o in runs], prove=False)
        return [None if m is None else P._to_match(*m) for m in res]

    fast, t_fast = timed(full_search)
    same = fast == ref
    found = sum(m is not None for m in fast)
    print(f"Algorithm 2  n={a.n2}+{a.n2} d={a.d2}, all {len(vs)} v: reference {t_ref:.2f} s "
          f"({mg.solves} lstsq), fast {t_fast:.3f} s, ratio {t_ref / t_fast:.0f}x, "
          f"identical={same}, {found} v-minimal matches "
          f"(sizes {sorted({m.size for m in fast if m is not None})}), "
          f"closest decision {mg.closest:.1e}")

    # simple matches at the pipeline's defaults
    cfg = defaults()
    eps_list = cfg["simple_eps"] if cfg["simple_eps"] is not None else cfg["eps"]
    X, Y = layer(a.d3, a.n3, a.eps, a.seed + 2)
    print(f"Simple matches {a.n3}+{a.n3} d={a.d3}, schema defaults simple_eps={eps_list}, "
          f"restarts={cfg['restarts']}, device={a.device}:")
    simple_vs_batched(X, Y, eps_list, cfg["restarts"], a.sample, a.device,
                      label=f"Simple matches {a.n3}+{a.n3} (bar: <= 120 s on 2 CPU cores)")

    if a.activations is not None:
        X, Y = real_layer(a.activations)
        rows = np.random.default_rng(0).choice(len(X), min(len(X), 10_000), replace=False)
        X, Y = X[np.sort(rows)], Y[np.sort(rows)]
        print(f"Real activations {X.shape[1]}+{Y.shape[1]} units (conv2-conv4 of 2 nets per "
              f"side), d={len(X)}, restarts={cfg['restarts']}:")
        simple_vs_batched(X, Y, a.real_eps, cfg["restarts"], a.sample, a.device,
                          label="Real activations")


if __name__ == "__main__":
    main()

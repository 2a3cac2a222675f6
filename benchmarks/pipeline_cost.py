"""Benchmark: what a paper-scale run costs, per rule group, measured here and extrapolated.

    python benchmarks/pipeline_cost.py [--workdir DIR] [--reuse] [--presets cifar10-resnet18 ...]

1. **Measure.** Writes the 5,000 embedded MNIST digits as 32 px RGB PNGs in an ImageNet-style
   folder (``train/<digit>/*.png``, ``val/<digit>/*.png``) and runs the whole workflow of the
   ``cifar10-resnet18`` preset on it, with its analysis settings unchanged but a small run:
   ``--seeds`` seeds, ``--train-images`` images for 1 epoch, ``--probe-images`` probe images and
   the layers in ``--layers`` at their real width (ResNet-18 at 32 px: conv1 64 units on 32x32
   positions, layer2.1 128 on 16x16, layer4.1 512 on 4x4, avgpool 512 vector). Every job's CPU
   time (user+sys) and peak memory (max RSS) come from the ``benchmark:`` record Snakemake writes.
   ``--reuse`` skips the run and reads the records of an earlier one in ``--workdir``.

2. **Extrapolate.** For each preset the job list comes from ``snakemake --dry-run`` of the preset
   itself (offline: a dry run reads no data) and each layer's units, kind and positions from the
   model built on the ``meta`` device at the preset's image size. Each rule's CPU time per job is
   ``startup + rate x size``, with ``startup`` the CPU time of the cheapest job of the run (Python
   and imports), ``rate`` from the measured job of the largest size, and ``size`` the rule's
   scaling law (``SCALING`` below: e.g. train ~ images x epochs x MACs per image, correlate ~ rows x
   (seeds x units)^2, match ~ pairs x units^3). Peak memory is extrapolated the same way from the
   memory law (``MEMORY``; rules without one keep the largest measured peak).

3. **Report.** ``benchmarks/results/pipeline_cost.{md,csv}``: rule group, jobs, CPU-hours, GPU-hours
   (GPU rules only; see ``GPU_NOTE``), largest job and peak memory, per preset; and
   ``benchmarks/results/profile_resources.yaml``, the per-rule ``mem_mb``/``runtime`` for the SLURM
   profile (the largest job over the presets, with headroom), which ``--write-profiles`` copies into
   ``workflow/profiles/*/config.yaml`` between the ``pipeline_cost`` markers.

CPU times, not wall times, are what is extrapolated: on a shared machine the wall time stretches
with the load (printed beside it), the CPU time does not. The measured run's own wall time and
load average are printed for reference. Language-model presets (no training, token rows) are not
extrapolated: their extract cost is a transformer forward pass this run does not measure.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

MEASURED_PRESET = "cifar10-resnet18"
IMAGE_PRESETS = ["cifar10-resnet18", "cifar10-resnet34", "cifar10-vgg16", "imagenet-caffenet", "imagenet-vgg16"]
GPU_RULES = {"train", "extract"}
GPU_NOTE = ("GPU-hours: not measured. The measuring machine has no GPU and benchmarks/gpu_check.py has not "
            "been run on one, so there is no measured GPU speed to convert the CPU figures with; train and "
            "extract are the rules that use a GPU, and their CPU-hours are what they cost without one")
# Images the presets' datasets hold (a dry run does not open them).
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "imagefolder": 1_281_167}   # ILSVRC-2012 train
HELDOUT_IMAGES = {"cifar10": 10_000, "cifar100": 10_000, "imagefolder": 50_000}    # test / val


# --------------------------------------------------------------------------------------------
# What a run is made of: sizes that the scaling laws use.


@dataclass
class Layer:
    name: str
    kind: str        # spatial, tokens, vector
    units: int
    positions: int   # rows per probe input (1 for vector layers)


@dataclass
class Scale:
    """The sizes of one run that the scaling laws read."""

    seeds: int
    untrained: int
    train_images: int
    heldout_images: int
    image_size: int
    macs: float                       # multiply-adds of one forward pass of one image
    layers: list[Layer]
    largest_activation: float = 0.0   # floats in the largest conv/linear output of one image
    all_activations: float = 0.0      # floats in all conv/linear outputs of one image
    cfg: dict = field(default_factory=dict)  # the validated config (its analysis settings)
    jobs: dict[str, int] = field(default_factory=dict)  # jobs per rule, from the dry run

    @property
    def pairs(self) -> int:
        return self.seeds * (self.seeds - 1) // 2

    @property
    def probe_images(self) -> int:
        return self.cfg["dataset"]["probe_images"]

    def rows(self, layer: Layer) -> int:
        return self.probe_images * layer.positions

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)

    def get(self, section: str, key: str, default=None):
        value = self.cfg.get(section, {}).get(key)
        return default if value is None else value


def _subspace_rows(s: Scale, layer: Layer) -> float:
    """Rows of all of Algorithm 1's repeats: conv layers draw `sample_size` rows `repeats` times."""
    rows = s.rows(layer)
    if layer.kind == "vector":
        return float(rows)
    return float(min(s.get("subspace", "sample_size", rows), rows) * s.get("subspace", "repeats", 1))


def _baselines(s: Scale, section: str) -> int:
    base = s.get(section, "baseline", "first")
    return 0 if base == "none" else s.untrained * (1 if base == "first" else s.seeds)


# The cost of ONE job of a rule, up to a constant the measured run gives, as a function of the
# run's sizes `s` and the job's layer `L` (None for rules that are not per layer).
# n: units per network in the layer, d: rows, S: seeds.
SCALING = {
    "train": ("train images x epochs x MACs/image",
              lambda s, L: s.train_images * s.get("train", "epochs") * s.macs),
    "extract": ("probe images x MACs/image", lambda s, L: s.probe_images * s.macs),
    # the joint covariance of all seeds' units, streamed over the rows
    "correlate": ("rows x (S x n)^2", lambda s, L: s.rows(L) * (s.seeds * L.units) ** 2),
    # a Hungarian assignment and semi-matching per seed pair, on the stored correlations
    "match": ("pairs x n^3", lambda s, L: s.pairs * L.units ** 3),
    # every unit pair's 20x20 histogram over `samples` rows
    "mutual_info": ("min(samples, d) x n^2",
                    lambda s, L: min(s.get("mutual_info", "samples", 60000), s.rows(L)) * L.units ** 2),
    # an L1 regression of every unit on the other net's n units (on the covariance), per decay
    "sparse_map": ("n^3", lambda s, L: L.units ** 3),
    # the eigen-decomposition of the 2n-node graph
    "cluster": ("(2n)^3", lambda s, L: (2 * L.units) ** 3),
    # Algorithm 1 for every pair and baseline: projections of 2n vectors over all repeats' rows
    "subspace": ("(pairs + baselines) x repeats x d x (2n)^2",
                 lambda s, L: (s.pairs + _baselines(s, "subspace")) * _subspace_rows(s, L) * (2 * L.units) ** 2),
    "subspace_sample_size": ("d x (2n)^2", lambda s, L: s.rows(L) * (2 * L.units) ** 2),
    # every measure on every layer of one pair (rows capped at max_rows)
    "similarity": ("sum over layers of min(d, max_rows) x n^2",
                   lambda s, L: sum(min(s.rows(x), s.get("similarity", "max_rows", 20000)) * x.units ** 2
                                    for x in s.layers)),
    # block cross-products of every pair and baseline, then the replicates
    "bootstrap": ("(pairs + baselines) x d x n^2",
                  lambda s, L: (s.pairs + s.seeds * s.untrained) * s.rows(L) * L.units ** 2),
    # Algorithm 1 on every replicate's Gram matrix of every repeat's rows (Cholesky solves of up
    # to 2n x 2n) for the s(eps) table's pairs, after block cross-products over those rows;
    # undersampled layers skip it (a job of seconds), which this law does not know
    "bootstrap_subspace": ("(pairs + baselines) x repeats x (subspace_replicates x (2n)^3 + d x (2n)^2)",
                           lambda s, L: (s.pairs + _baselines(s, "subspace"))
                           * (1 if L.kind == "vector" else s.get("subspace", "repeats", 16))
                           * (s.get("statistics", "subspace_replicates", 200) * (2 * L.units) ** 3
                              + min(s.rows(L), s.get("subspace", "sample_size", 10_000)) * (2 * L.units) ** 2)),
    # every interpolated network: BN statistics reset, then scored on the held-out images
    "connectivity": ("alphas x (eval + reset images) x MACs/image",
                     lambda s, L: s.get("connectivity", "alphas", 21)
                     * (s.get("connectivity", "eval_images", s.heldout_images)
                        + min(s.get("connectivity", "reset_images", 2000), s.train_images)) * s.macs),
    "stitch": ("(steps x batch + fit + eval images) x MACs/image",
               lambda s, L: (s.get("stitching", "steps", 300) * s.get("stitching", "batch_size", 128)
                             + s.get("stitching", "fit_images", 1000)
                             + s.get("stitching", "eval_images", s.heldout_images)) * s.macs),
}
SCALING["untrained"] = ("one network built", lambda s, L: 0.0)
SCALING["similarity_untrained"] = SCALING["similarity"]
PER_LAYER = {"correlate", "match", "mutual_info", "sparse_map", "cluster", "subspace", "subspace_sample_size",
             "bootstrap", "bootstrap_subspace"}

# Peak memory: the bytes of the arrays a job must hold at once (float64). The measured peak at
# full width is mostly the process, the libraries and the data; the growth of these arrays from
# the measured job to the target's is ADDED to it, never the whole peak scaled (which would scale
# the interpreter with units^2).
MEMORY = {
    "correlate": ("+ 3 (S x n)^2 float64 (cross-products, covariance, correlation) + a chunk of rows of every "
                  "seed twice in float32 (read, joined)",
                  lambda s, L: 8 * 3 * (s.seeds * L.units) ** 2
                  + 4 * 2 * min(s.get("correlate", "chunk_rows", 65536), s.rows(L)) * s.seeds * L.units),
    "match": ("+ 2 (S x n)^2 float64 (stored covariance and correlation)", lambda s, L: 8 * 2 * (s.seeds * L.units) ** 2),
    "mutual_info": ("+ min(samples, d) x 2n float64", lambda s, L: 8 * min(s.get("mutual_info", "samples", 60000),
                                                                           s.rows(L)) * 2 * L.units),
    "sparse_map": ("+ 4 n^2 float64 (covariances, weights)", lambda s, L: 8 * 4 * L.units ** 2),
    "cluster": ("+ 4 (2n)^2 float64 (affinity, Laplacian, eigenvectors)", lambda s, L: 8 * 4 * (2 * L.units) ** 2),
    "subspace": ("+ 2 d x 2n float64 (both nets' rows, their projections)", lambda s, L: 8 * 2 * s.rows(L) * 2 * L.units),
    "subspace_sample_size": ("+ 2 d x 2n float64", lambda s, L: 8 * 2 * s.rows(L) * 2 * L.units),
    "similarity": ("+ 2 min(d, max_rows) x n float64 of the largest layer",
                   lambda s, L: 8 * 2 * max(min(s.rows(x), s.get("similarity", "max_rows", 20000)) * x.units
                                            for x in s.layers)),
    "bootstrap": ("+ nets x d x n float64 (every net's rows)",
                  lambda s, L: 8 * (s.seeds + s.untrained) * s.rows(L) * L.units),
}
# The rules that run networks on image batches: their measured peak is mostly the process, the
# model and the data, not the activations at 32 px, so the activations' growth is ADDED to it (in
# float32 bytes): training keeps every layer's output for the backward pass, inference holds a
# layer's input and output. On a GPU these activations are in GPU memory, not in the job's RSS.
ACTIVATION_MEMORY = {
    "train": ("+ batch x all layers' outputs", lambda s: 4 * s.get("train", "batch_size") * s.all_activations),
    "extract": ("+ batch x 2 x largest output", lambda s: 8 * s.get("extract", "batch_size") * s.largest_activation),
    "connectivity": ("+ batch x 2 x largest output",
                     lambda s: 8 * s.get("connectivity", "batch_size", 500) * s.largest_activation),
    "stitch": ("+ batch x all layers' outputs", lambda s: 4 * s.get("stitching", "batch_size", 128) * s.all_activations),
}
MEMORY["similarity_untrained"] = MEMORY["similarity"]
MEMORY["bootstrap_subspace"] = MEMORY["bootstrap"]

GROUPS = {
    "train": "train (+ untrained)", "untrained": "train (+ untrained)", "import_checkpoint": "train (+ untrained)",
    "extract": "extract", "correlate": "correlate",
    "match": "match + mutual_info (Li 2016)", "mutual_info": "match + mutual_info (Li 2016)",
    "sparse_map": "sparse_map + cluster (Li 2016)", "cluster": "sparse_map + cluster (Li 2016)",
    "subspace": "subspace (Wang 2018)", "subspace_sample_size": "subspace (Wang 2018)",
    "similarity": "similarity", "similarity_untrained": "similarity",
    "bootstrap": "bootstrap (intervals, tests)", "bootstrap_subspace": "bootstrap (intervals, tests)",
    "connectivity": "connectivity + stitch", "stitch": "connectivity + stitch",
}
OTHER_GROUP = "figures + tables"
# Rules whose benchmark records lie in another rule's folder (similarity/<a>-untrained<u>.tsv).
RECORDED_AS = {"similarity_untrained": "similarity"}


# --------------------------------------------------------------------------------------------
# 2. Extrapolation (pure arithmetic on the measured records: tests/test_pipeline_cost.py).


def job_layer(rule: str, job: str) -> str | None:
    """The layer of a per-layer job from its record's path (``conv1`` or ``conv1/0-1``)."""
    return job.split("/")[0] if rule in PER_LAYER else None


def rule_constants(records: pd.DataFrame, measured: Scale) -> tuple[pd.DataFrame, float, float]:
    """Per rule, the CPU seconds per unit of its law, from the measured job of the largest size,
    and that job's array bytes (``MEMORY``) and peak; returns (table, startup CPU s, baseline MB): the cheapest job's CPU time and the
    smallest peak memory of the run, what every job pays however small."""
    startup = float(records["cpu_s"].min())
    base_mb = float(records["max_rss_mb"].min())
    rows = []
    for rule, jobs in records.groupby("rule"):
        row = {"rule": rule, "jobs": len(jobs), "cpu_s": float(jobs["cpu_s"].max()),
               "rss_mb": float(jobs["max_rss_mb"].max()), "cpu_rate": math.nan,
               "mem_bytes": math.nan, "mem_at": math.nan}
        if rule in SCALING:
            size = [SCALING[rule][1](measured, _layer(measured, rule, job)) for job in jobs["job"]]
            i = int(np.argmax(size))
            if size[i] > 0:
                row["cpu_rate"] = max(float(jobs["cpu_s"].iloc[i]) - startup, 0.0) / size[i]
        if rule in MEMORY:
            size = [MEMORY[rule][1](measured, _layer(measured, rule, job)) for job in jobs["job"]]
            i = int(np.argmax(size))
            row["mem_bytes"], row["mem_at"] = float(size[i]), float(jobs["max_rss_mb"].iloc[i])
        rows.append(row)
    return pd.DataFrame(rows).set_index("rule"), startup, base_mb


def _layer(scale: Scale, rule: str, job: str) -> Layer | None:
    name = job_layer(rule, job)
    return scale.layer(name) if name is not None else None


def _target_layers(target: Scale, rule: str, count: int) -> list[tuple[Layer | None, float]]:
    """(layer, jobs) for a rule's `count` jobs at the target: per-layer rules spread them evenly
    over the layers (count = layers x pairs picked); a rule with fewer jobs than layers (the
    sample-size study) runs on the middle layer, as its default picks."""
    if rule not in PER_LAYER:
        return [(None, float(count))]
    layers = target.layers
    if count < len(layers):
        name = target.get("subspace", "sample_size_study", {}).get("layer") or layers[len(layers) // 2].name
        return [(target.layer(name), float(count))]
    return [(layer, count / len(layers)) for layer in layers]


def extrapolate(records: pd.DataFrame, measured: Scale, target: Scale) -> pd.DataFrame:
    """Per rule of the target run: jobs, CPU seconds in all, the largest job's CPU seconds and its
    peak memory (MB). A job costs ``startup + cpu_rate x size`` CPU seconds, and its measured
    peak plus the growth of the arrays it holds (``MEMORY``, ``ACTIVATION_MEMORY``) in MB; a rule
    without a law costs what its measured jobs cost (the largest of them), and a rule the measured
    run did not have costs the start-up (and is flagged: ``measured`` False)."""
    constants, startup, base_mb = rule_constants(records, measured)
    rows = []
    for rule, count in target.jobs.items():
        if rule in ("all", "total") or count == 0:
            continue
        measured_as = RECORDED_AS.get(rule, rule) if RECORDED_AS.get(rule) in constants.index else rule
        known = measured_as in constants.index
        c = constants.loc[measured_as] if known else None
        total = largest = peak = 0.0
        for layer, jobs in _target_layers(target, rule, count):
            if known and rule in SCALING and not math.isnan(c["cpu_rate"]):
                cpu = startup + c["cpu_rate"] * SCALING[rule][1](target, layer)
            else:
                cpu = c["cpu_s"] if known else startup
            if known and rule in MEMORY:
                mem = c["mem_at"] + max(0.0, MEMORY[rule][1](target, layer) - c["mem_bytes"]) / 2 ** 20
            elif known and rule in ACTIVATION_MEMORY:
                law = ACTIVATION_MEMORY[rule][1]
                mem = c["rss_mb"] + max(0.0, law(target) - law(measured)) / 2 ** 20
            else:
                mem = c["rss_mb"] if known else base_mb
            total += jobs * cpu
            largest, peak = max(largest, cpu), max(peak, mem)
        rows.append({"rule": rule, "group": GROUPS.get(rule, OTHER_GROUP), "jobs": count, "cpu_s": total,
                     "largest_job_cpu_s": largest, "peak_mb": peak, "gpu": rule in GPU_RULES, "measured": known})
    return pd.DataFrame(rows)


def by_group(rules: pd.DataFrame) -> pd.DataFrame:
    """The rules' table summed into rule groups: jobs, CPU-hours, the largest job, the peak memory."""
    table = rules.groupby("group", sort=False).agg(jobs=("jobs", "sum"), cpu_s=("cpu_s", "sum"),
                                                   largest_job_cpu_s=("largest_job_cpu_s", "max"),
                                                   peak_mb=("peak_mb", "max"), gpu=("gpu", "any"),
                                                   measured=("measured", "mean"))
    table["cpu_hours"] = table["cpu_s"] / 3600
    return table.reset_index()


# --------------------------------------------------------------------------------------------
# 1. The measured run.


def write_digit_folder(root: Path, train: int, val: int) -> None:
    """The embedded MNIST digits as 32 px RGB PNGs, ``root/{train,val}/<digit>/<i>.png``: a real
    image folder read through the same ImageFolder path as ImageNet."""
    from PIL import Image

    from convergent.data import _mnist5k_arrays

    images, labels = _mnist5k_arrays()
    if train + val > len(images):
        raise SystemExit(f"--train-images + --probe-images: at most {len(images)} digits")
    order = np.random.default_rng(0).permutation(len(images))  # the CSV is sorted by digit
    for split, index in (("train", order[:train]), ("val", order[train:train + val])):
        for i in index:
            folder = root / split / str(int(labels[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).convert("RGB").resize((32, 32), Image.BILINEAR).save(folder / f"{i}.png")


def measured_config(root: Path, args) -> dict:
    """The preset with its analysis settings, on the digit folder at a small run's sizes. The
    functional stages run on the first pair with a few alphas, images and steps (the preset: 21
    alphas over all held-out images and 2,000 for the batch-norm reset, 300 steps, every pair):
    their laws scale with those counts, so the rate carries over, and at the preset's settings
    they would be most of the measured run."""
    cfg = yaml.safe_load((REPO / "workflow" / "configs" / f"{MEASURED_PRESET}.yaml").read_text())
    cfg["seeds"] = list(range(args.seeds))
    cfg["dataset"] = {"name": "imagefolder", "root": str(root), "image_size": 32, "probe_images": args.probe_images}
    cfg["model"]["layers"] = list(args.layers)
    cfg["train"].update(epochs=1, milestones=[], num_workers=0)
    cfg["connectivity"] = {"pairs": "first", "alphas": 3, "eval_images": 100, "reset_images": 100}
    cfg["stitching"] = {"pairs": "first", "steps": 5, "batch_size": 64, "fit_images": 100, "eval_images": 100}
    return cfg


def run_measurement(workdir: Path, args) -> None:
    root = workdir / "digits"
    if not root.exists():
        write_digit_folder(root, args.train_images, args.probe_images)
    configfile = workdir / "measured.yaml"
    configfile.write_text(yaml.safe_dump(measured_config(root, args), sort_keys=False))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(configfile), "--cores", str(args.cores), "--keep-going"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""}
    load, began = os.getloadavg()[0], time.perf_counter()
    print(f"measuring: {' '.join(command)}\n  load average at start {load:.1f} on {os.cpu_count()} CPUs", flush=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    (workdir / "snakemake.log").write_text(result.stdout + result.stderr)
    print(f"  finished in {time.perf_counter() - began:.0f} s wall (load average now {os.getloadavg()[0]:.1f}); "
          f"exit {result.returncode}, log {workdir / 'snakemake.log'}", flush=True)
    if result.returncode != 0:
        raise SystemExit((result.stdout + result.stderr)[-4000:])


# --------------------------------------------------------------------------------------------
# 3. The sizes of a run: its layers and MACs from the model, its jobs from a dry run.


def forward_size(model_cfg: dict, geometry: tuple[int, int, int]) -> tuple[float, float, float]:
    """Multiply-adds of one image's forward pass (the convolutions and linear layers: what
    training, extraction and the functional stages spend their time on), and the floats of the
    largest and of all of their outputs (what a batch holds in memory)."""
    import torch
    from torch import nn

    from convergent.models import build_network

    module = build_network(model_cfg, geometry, pretrained=False).eval()
    macs, largest, total = [0.0], [0.0], [0.0]

    def count(m, inputs, output):
        if isinstance(m, nn.Conv2d):
            macs[0] += output.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            macs[0] += output.numel() * m.in_features
        largest[0], total[0] = max(largest[0], output.numel()), total[0] + output.numel()

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        module(torch.zeros(1, geometry[0], geometry[2], geometry[2]))
    for hook in hooks:
        hook.remove()
    return macs[0], largest[0], total[0]


def run_scale(cfg: dict, jobs: dict[str, int], train_images: int, heldout_images: int, classes: int) -> Scale:
    """The sizes of a run of validated config `cfg` (an image-classifier preset)."""
    from convergent.models import plan_probes

    size = 32 if cfg["dataset"]["name"] in TRAIN_IMAGES and cfg["dataset"]["name"] != "imagefolder" \
        else int(cfg["dataset"].get("image_size", 224))
    geometry = (3, classes, size)
    per_image = cfg["extract"]["positions_per_image"]
    layers = []
    for name, probe in plan_probes(cfg["model"], geometry).items():
        positions = 1 if probe.kind == "vector" else min(per_image, probe.shape[1] * probe.shape[2])
        layers.append(Layer(name, probe.kind, probe.units, positions))
    macs, largest, total = forward_size(cfg["model"], geometry)
    return Scale(seeds=len(cfg["seeds"]), untrained=len(cfg["untrained_seeds"]), train_images=train_images,
                 heldout_images=heldout_images, image_size=size, macs=macs, layers=layers, cfg=cfg, jobs=jobs,
                 largest_activation=largest, all_activations=total)


def validated(config: dict) -> dict:
    from convergent.config import validate

    return validate(config, REPO / "workflow" / "schemas" / "config.schema.yaml")


def preset_scale(preset: str, scratch: Path) -> Scale:
    """A preset's full sizes: jobs per rule from its dry run, layers and MACs from its model."""
    from dag_scale import dry_run

    import json

    text = (REPO / "workflow" / "configs" / f"{preset}.yaml").read_text()
    config = yaml.safe_load(text)
    workdir = scratch / preset
    workdir.mkdir(parents=True, exist_ok=True)
    cache = workdir / "jobs.json"  # a dry run takes a minute on a loaded machine: kept while the preset is unchanged
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    if cached.get("preset") == text and cached.get("snakefiles") == _workflow_digest():
        jobs = cached["jobs"]
    else:
        _, _, jobs = dry_run(config, workdir)
        cache.write_text(json.dumps({"preset": text, "snakefiles": _workflow_digest(), "jobs": jobs}))
    cfg = validated(config)
    name = cfg["dataset"]["name"]
    return run_scale(cfg, jobs, TRAIN_IMAGES[name], HELDOUT_IMAGES[name], 1000 if name == "imagefolder" else 10)


def _workflow_digest() -> str:
    import hashlib

    files = sorted([REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")])
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def measured_scale(workdir: Path, records: pd.DataFrame, args) -> Scale:
    cfg = validated(yaml.safe_load((workdir / "measured.yaml").read_text()))
    jobs = records.groupby("rule").size().to_dict()
    return run_scale(cfg, jobs, args.train_images, args.probe_images, 10)


# --------------------------------------------------------------------------------------------
# 4. Tables and the profiles' resources.


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.1f}" if hours >= 1 else f"{hours:.2f}"


def _memory(mb: float) -> str:
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def cost_table(groups: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per preset and rule group, plus each preset's total, formatted for the README. A
    group none of whose rules the measured run has is shown as not measured and left out of the
    total (its start-up cost alone would understate it)."""
    rows = []
    for preset, table in groups.items():
        for _, g in table.iterrows():
            if g["measured"] == 0:
                rows.append({"preset": preset, "rule group": g["group"], "jobs": int(g["jobs"]),
                             "CPU-hours": "not measured", "GPU-hours": "not measured" if g["gpu"] else "-",
                             "largest job (CPU-h)": "not measured", "peak memory": "not measured"})
                continue
            partly = " (partly measured)" if g["measured"] < 1 else ""
            rows.append({"preset": preset, "rule group": g["group"] + partly, "jobs": int(g["jobs"]),
                         "CPU-hours": _hours(g["cpu_s"]), "GPU-hours": "not measured" if g["gpu"] else "-",
                         "largest job (CPU-h)": _hours(g["largest_job_cpu_s"]), "peak memory": _memory(g["peak_mb"])})
        known = table[table["measured"] > 0]
        rows.append({"preset": preset, "rule group": "**total measured**", "jobs": int(table["jobs"].sum()),
                     "CPU-hours": _hours(known["cpu_s"].sum()), "GPU-hours": "not measured",
                     "largest job (CPU-h)": _hours(known["largest_job_cpu_s"].max()),
                     "peak memory": _memory(known["peak_mb"].max())})
    return pd.DataFrame(rows)


def profile_resources_of(rules: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Only measured rules size the profiles, by their own names (a `use rule ... as` copy such as
    similarity_untrained keeps the resources its rule declares)."""
    return {preset: table[table["measured"] & ~table["rule"].isin(list(RECORDED_AS))] for preset, table in rules.items()}


# GPU rules: not measured here. Data-loader workers feeding the GPU, and runtimes (minutes) from the
# presets' own estimate (about 1-2 h per seed on one modern GPU for the CIFAR presets) with margin.
GPU_THREADS = {"train": 8, "extract": 4}
# subspace: the simple-match search is outside its law (it depends on how many neurons the maximum
# match holds, and how large its simple matches are). At 512 units one epsilon of it took ~25
# CPU-minutes under oversubscribed threads, 2-3 with one thread per job, and ~2 since the search
# tries chunks and stops at known rejections (docs/subspace.md); the floor is kept generous, since
# layers whose simple matches are larger cost more.
RUNTIME_FLOOR = {"subspace": 720}
RUNTIME_CAP = 7 * 24 * 60  # a week, the longest most clusters allow
GPU_RUNTIME = {"train": 720, "extract": 120}


def profile_resources(rules: dict[str, pd.DataFrame], headroom: float = 1.5,
                      hours_per_thread: float = 1.0) -> dict[str, dict]:
    """Per rule, over the presets: ``mem_mb``, the largest extrapolated peak x headroom, rounded up
    to 500 MB, at least 1,000; ``threads``, one per ``hours_per_thread`` CPU-hours of the largest
    job (1 to 8: the BLAS-bound steps use them, and a job of a day on one core should not be one);
    ``runtime`` in minutes, the largest job's CPU time on one core x headroom, at least 10 (no
    speed-up from the threads is assumed, so it is an upper bound). GPU rules keep a set runtime
    and their data-loader threads (``GPU_RUNTIME``, ``GPU_THREADS``): their CPU time says nothing
    about their time on a GPU."""
    merged = pd.concat(rules.values())
    out = {}
    for rule, jobs in merged.groupby("rule"):
        cpu = float(jobs["largest_job_cpu_s"].max())
        entry = {"mem_mb": int(max(1000, math.ceil(jobs["peak_mb"].max() * headroom / 500) * 500))}
        if rule in GPU_RULES:
            entry["threads"] = GPU_THREADS.get(rule, 1)
            entry["runtime"] = GPU_RUNTIME.get(rule, 120)
        else:
            entry["threads"] = int(min(8, max(1, math.ceil(cpu / 3600 / hours_per_thread))))
            entry["runtime"] = int(min(RUNTIME_CAP, max(RUNTIME_FLOOR.get(rule, 10), math.ceil(cpu * headroom / 60))))
        out[rule] = entry
    return out


PROFILE_BEGIN = "# >>> pipeline_cost: written by benchmarks/pipeline_cost.py --write-profiles; do not edit by hand"
PROFILE_END = "# <<< pipeline_cost"


def profile_block(resources: dict[str, dict], source: str, gpu: bool, runtime: bool, attempt: bool,
                  threads: bool = True) -> str:
    """The profile's `set-threads:` and `set-resources:` between the markers."""
    lines = [PROFILE_BEGIN, f"# {source}.", "# mem_mb: the largest job's peak x 1.5; runtime (minutes): its CPU time on one core",
             "# x 1.5; threads: one per CPU-hour of the largest job, 1-8. train, extract (GPU): not measured, their",
             "# runtime is set by hand (ImageNet: raise train's, e.g. --set-resources train:runtime=4320)."]
    if threads:
        lines.append("set-threads:")
        lines += [f"  {rule}: {resources[rule]['threads']}" for rule in sorted(resources)]
    lines.append("set-resources:")
    for rule in sorted(resources):
        entry = resources[rule]
        lines.append(f"  {rule}:")
        if gpu and rule in GPU_RULES:
            lines.append("    gpu: 1")
        if runtime and "runtime" in entry:
            lines.append(f"    runtime: {entry['runtime']}")
        lines.append(f"    mem_mb: \"{entry['mem_mb']} * attempt\"" if attempt else f"    mem_mb: {entry['mem_mb']}")
    lines.append(PROFILE_END)
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with the marked block replaced (or appended where there is none yet)."""
    if PROFILE_BEGIN in text:
        head, rest = text.split(PROFILE_BEGIN, 1)
        tail = rest.split(PROFILE_END, 1)[1].lstrip("\n")
        return head + block + tail
    return text.rstrip("\n") + "\n\n" + block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/convergent-pipeline-cost"))
    parser.add_argument("--reuse", action="store_true", help="read the records of an earlier run in --workdir")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--probe-images", type=int, default=640,
                        help="640 x 16 positions of layer4.1 = 10,240 rows: above 8 per unit of 512 + 512, so "
                             "the simple-match search runs as it does at paper size")
    parser.add_argument("--layers", nargs="+", default=["conv1", "layer2.1", "layer4.1", "avgpool"])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=IMAGE_PRESETS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pipeline_cost")
    parser.add_argument("--write-profiles", action="store_true",
                        help="write the resources into workflow/profiles/{slurm,workstation}/config.yaml")
    args = parser.parse_args()
    from rule_times import job_records

    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        run_measurement(args.workdir, args)
    experiment = yaml.safe_load((args.workdir / "measured.yaml").read_text())["experiment"]
    records = job_records(args.workdir / "results" / experiment)
    measured = measured_scale(args.workdir, records, args)
    load = os.getloadavg()
    print(f"measured: {len(records)} jobs, {records['cpu_s'].sum():.0f} s CPU, {records['wall_s'].sum():.0f} s wall "
          f"summed over jobs; largest peak {records['max_rss_mb'].max():.0f} MB (load average now "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs)")
    print("  layers: " + ", ".join(f"{x.name} ({x.kind}, {x.units} units, {measured.rows(x)} rows)"
                                   for x in measured.layers) + f"; {measured.macs / 1e6:.0f} MMAC/image")
    with pd.option_context("display.width", 200):
        print(records.groupby("rule").agg(jobs=("job", "size"), cpu_s=("cpu_s", "sum"), max_cpu_s=("cpu_s", "max"),
                                          max_rss_mb=("max_rss_mb", "max")).sort_values("cpu_s", ascending=False)
              .to_string(float_format="{:.1f}".format))
    rules, groups = {}, {}
    scratch = args.workdir / "dry-runs"
    for preset in args.presets:
        target = preset_scale(preset, scratch)
        rules[preset] = extrapolate(records, measured, target)
        groups[preset] = by_group(rules[preset])
        print(f"{preset}: {target.seeds} seeds, {len(target.layers)} layers (widest "
              f"{max(x.units for x in target.layers)} units), {target.probe_images} probe images, "
              f"{target.macs / 1e9:.2f} GMAC/image: {groups[preset]['cpu_s'].sum() / 3600:,.1f} CPU-hours", flush=True)
    table = cost_table(groups)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    pd.concat(rules, names=["preset"]).to_csv(args.out.parent / f"{args.out.name}_rules.csv")
    source = (f"from benchmarks/pipeline_cost.py: {MEASURED_PRESET} measured at {measured.seeds} seeds, "
              f"{measured.probe_images} probe images, layers {' '.join(x.name for x in measured.layers)} at full width, "
              f"extrapolated to the presets {', '.join(args.presets)} (the largest job of each rule)")
    note = (f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs: {source}. CPU-hours of one core; "
            f"{GPU_NOTE}. Scaling laws per rule: " +
            "; ".join(f"{rule} ~ {law}" for rule, (law, _) in SCALING.items() if rule in records["rule"].values))
    args.out.with_suffix(".md").write_text(table.to_markdown(index=False) + "\n\n" + note + "\n")
    print(table.to_markdown(index=False))
    print(f"\n{note}\nwritten: {args.out.with_suffix('.md')}, {args.out.with_suffix('.csv')}")
    resources = profile_resources(profile_resources_of(rules))
    (args.out.parent / "profile_resources.yaml").write_text(profile_block(resources, source, True, True, True))
    if args.write_profiles:
        for name, kwargs in (("slurm", dict(gpu=True, runtime=True, attempt=True)),
                             ("workstation", dict(gpu=True, runtime=False, attempt=False, threads=False))):
            path = REPO / "workflow" / "profiles" / name / "config.yaml"
            path.write_text(replace_block(path.read_text(), profile_block(resources, source, **kwargs)))
            print(f"written: {path}")


if __name__ == "__main__":
    main()

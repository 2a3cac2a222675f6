"""Rule `similarity`: every whole-layer similarity measure for one pair of networks.

Writes one long-format CSV (one row per value) with two kinds of comparison:

* ``scope = same_layer``: A's layer vs B's same layer on the layer's native paired rows (images ×
  positions for conv layers), as Li et al. and Wang et al. compare. For a pair of trained seeds
  the covariance-based measures come from the streamed statistics (``stats/{layer}.h5``, all
  rows); the others from at most ``max_rows`` rows (RBF CKA: ``kernel_rows`` rows; RSA: one row
  per image, ``kernel_rows`` images). With ``permutations > 0`` the same measures are also
  computed with B's rows shuffled (``null = permutation``): the value expected by chance.
* ``scope = cross_layer``: A's layer i vs B's layer j for every i, j, on one row per probe image,
  since rows of different conv layers are not paired. A conv layer's row is its spatial mean
  over the whole map when the activation file has ``/layers/{layer}/image_mean``; otherwise an
  estimate from the sampled positions, net A's from one half of each image's positions and net
  B's from the other half, so that no cell (the diagonal included) shares sampling noise
  between the nets. Column ``image_rows`` says which (``exact`` or ``position_halves``).

The pair is either two trained seeds (``kind = trained``) or a trained seed and an untrained
network of the same architecture (``kind = untrained``), the architecture-only baseline.
"""


import os
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from convergent import similarity as sim
from convergent.activations import iter_sample_chunks, layer_attrs, read_positions, read_samples
from convergent.correlation import LayerStats

COLUMNS = ["kind", "net_a", "net_b", "scope", "layer_a", "layer_b", "measure", "null", "permutation",
           "n_rows", "image_rows", "value"]


def _rng(cfg: dict, *keys: str) -> np.random.Generator:
    # Seeded by the config and the layer only, never the network: both nets get the same rows.
    return np.random.default_rng([int(cfg["seed"]), *(zlib.crc32(k.encode()) for k in keys)])


def _subset(n: int, cap: int, rng: np.random.Generator) -> np.ndarray | None:
    return None if n <= cap else np.sort(rng.choice(n, size=cap, replace=False))


IMAGE_MEAN = "image_mean"  # optional [n_images, C] dataset: the spatial mean over the full map


def _image_mean(path, layer: str) -> np.ndarray | None:
    with h5py.File(path, "r") as h5:
        group = h5[f"layers/{layer}"]
        return group[IMAGE_MEAN][()].astype(np.float64) if IMAGE_MEAN in group else None


def _pooled(path, layer: str, half: int | None = None, chunk_rows: int = 65536) -> tuple[np.ndarray, str]:
    """One row per probe image, and how it was obtained.

    ``exact``: fc layers' rows, or a conv layer's spatial mean over the whole map when the file
    has ``image_mean``. Otherwise ``positions``: the mean over the image's sampled positions, or
    with ``half`` 0/1 over every other one of them (alternating, so both halves cover the
    image), which keeps the positions seen by the two networks disjoint.
    """
    positions = read_positions(path, layer)
    if positions is None:
        return read_samples(path, layer), "exact"
    exact = _image_mean(path, layer)
    if exact is not None:
        return exact, "exact"
    image = positions[:, 0]
    n_images = int(image.max()) + 1
    keep = np.ones(len(image), dtype=bool)
    if half is not None and np.bincount(image).min() >= 2:
        order = np.argsort(image, kind="stable")
        rank = np.empty(len(image), dtype=np.int64)  # each row's index among its image's rows
        rank[order] = np.arange(len(image)) - np.searchsorted(image[order], image[order])
        keep = rank % 2 == half
    sums, start = None, 0
    for chunk in iter_sample_chunks(path, layer, chunk_rows):
        chunk = np.asarray(chunk, dtype=np.float64)
        if sums is None:
            sums = np.zeros((n_images, chunk.shape[1]))
        rows = slice(start, start + len(chunk))
        np.add.at(sums, image[rows][keep[rows]], chunk[keep[rows]])
        start += len(chunk)
    return sums / np.bincount(image[keep], minlength=n_images)[:, None], "positions" if half is None else "position_halves"


def _native(path, layer: str, rows: np.ndarray | None) -> np.ndarray:
    return read_samples(path, layer, rows=rows)


def measure_kwargs(cfg: dict) -> dict[str, dict]:
    """Config parameters of the measures that have any."""
    return {"rbf_cka": {"sigma": cfg["rbf_sigma"]}, "svcca": {"keep": cfg["svcca_variance"]},
            "subspace": {"epsilon": cfg["subspace_epsilon"], "device": "cpu"},
            "mutual_knn": {"k": cfg["mutual_knn_k"]}}


PER_INPUT = ("rsa", "mutual_knn")  # kernels over inputs: one row per probe image


def same_layer(measures: list[str], cfg: dict, native_a, native_b, pooled_a, pooled_b,
               covs=None, kernel_rows=None, kernel_images=None) -> dict[str, float]:
    """All measures between the same layer of two nets; ``covs`` (streamed) replaces the native
    covariances for the covariance-based measures when given."""
    kwargs = measure_kwargs(cfg)
    if covs is None and any(sim.MEASURES[m].cov is not None for m in measures):
        covs = sim.covariances(native_a, native_b)
    out = {}
    for name in measures:
        m = sim.MEASURES[name]
        if m.cov is not None:
            out[name] = m.cov(*covs, **kwargs.get(name, {}))
        elif name in PER_INPUT:
            ia = slice(None) if kernel_images is None else kernel_images
            out[name] = m.fn(pooled_a[ia], pooled_b[ia], **kwargs.get(name, {}))
        elif name == "rbf_cka":
            ia = slice(None) if kernel_rows is None else kernel_rows
            out[name] = sim.rbf_cka(native_a[ia], native_b[ia], **kwargs[name])
        else:
            out[name] = m.fn(native_a, native_b, **kwargs.get(name, {}))
    return out


def cross_layer(measures: list[str], cfg: dict, reps_a: list, reps_b: list,
                kernel_images=None) -> dict[str, np.ndarray]:
    """``[L_a, L_b]`` matrix per measure between per-image representations of every layer pair."""
    kwargs = measure_kwargs(cfg)
    k = slice(None) if kernel_images is None else kernel_images
    widths_a = np.cumsum([0] + [r.shape[1] for r in reps_a])
    joint = sim.covariances(np.hstack(reps_a), np.hstack(reps_b))
    widths_b = np.cumsum([0] + [r.shape[1] for r in reps_b])
    out = {}
    grams_a = grams_b = None
    for name in measures:
        m = sim.MEASURES[name]
        if name == "rsa":
            out[name] = sim.rsa_cross([r[k] for r in reps_a], [r[k] for r in reps_b])
            continue
        if name == "rbf_cka" and grams_a is None:
            grams_a = [sim.rbf_gram(r[k], kwargs[name]["sigma"]) for r in reps_a]
            grams_b = [sim.rbf_gram(r[k], kwargs[name]["sigma"]) for r in reps_b]
        values = np.empty((len(reps_a), len(reps_b)))
        for i, ra in enumerate(reps_a):
            sa = slice(widths_a[i], widths_a[i + 1])
            for j, rb in enumerate(reps_b):
                sb = slice(widths_b[j], widths_b[j + 1])
                if m.cov is not None:
                    values[i, j] = m.cov(joint[0][sa, sa], joint[1][sb, sb], joint[2][sa, sb],
                                         **kwargs.get(name, {}))
                elif name == "rbf_cka":
                    values[i, j] = sim.cka_gram(grams_a[i], grams_b[j])
                elif name in PER_INPUT:
                    values[i, j] = m.fn(ra[k], rb[k], **kwargs.get(name, {}))
                else:
                    values[i, j] = m.fn(ra, rb, **kwargs.get(name, {}))
        out[name] = values
    return out


def compare_pair(act_a, act_b, layers: list[str], cfg: dict, kind: str, net_a: str, net_b: str,
                 stats: dict | None = None, seeds: tuple[int, int] | None = None,
                 log=print) -> pd.DataFrame:
    """All rows of the pair's CSV. ``stats``: layer → stats path, used for trained pairs."""
    measures = list(cfg["measures"])
    rows = []

    def add(scope, la, lb, name, value, n_rows, image_rows, null="none", permutation=-1):
        rows.append((kind, net_a, net_b, scope, la, lb, name, null, permutation, n_rows, image_rows, float(value)))

    # Same layer: both nets see the same images at the same positions, so per-image rows are
    # paired whichever way they are pooled.
    pooled_a, source = zip(*[_pooled(act_a, layer) for layer in layers])
    pooled_b = [_pooled(act_b, layer)[0] for layer in layers]
    n_images = pooled_a[0].shape[0]
    kernel_images = _subset(n_images, cfg["kernel_rows"], _rng(cfg, "images"))
    n_pooled = n_images if kernel_images is None else len(kernel_images)

    for i, layer in enumerate(layers):
        n = int(layer_attrs(act_a, layer)["n_samples"])
        native_rows = _subset(n, cfg["max_rows"], _rng(cfg, layer, "native"))
        native_a, native_b = _native(act_a, layer, native_rows), _native(act_b, layer, native_rows)
        kernel_rows = _subset(len(native_a), cfg["kernel_rows"], _rng(cfg, layer, "kernel"))
        covs = None
        if stats is not None:
            pair = LayerStats.load(stats[layer]).pair(*seeds)
            covs = (pair.cov_aa, pair.cov_bb, pair.cov_ab)
        values = same_layer(measures, cfg, native_a, native_b, pooled_a[i], pooled_b[i], covs,
                            kernel_rows, kernel_images)
        n_cov = n if covs is not None else len(native_a)
        for name, value in values.items():
            add("same_layer", layer, layer, name, value, _n_rows(name, n_cov, len(native_a), kernel_rows, n_pooled),
                source[i])
        log(f"{layer}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
        rng = _rng(cfg, layer, "permutation")
        for p in range(cfg["permutations"]):
            perm = rng.permutation(len(native_b))
            perm_images = rng.permutation(n_images)
            values = same_layer(measures, cfg, native_a, native_b[perm], pooled_a[i],
                                pooled_b[i][perm_images], None, kernel_rows, kernel_images)
            for name, value in values.items():
                add("same_layer", layer, layer, name, value,
                    _n_rows(name, len(native_a), len(native_a), kernel_rows, n_pooled), source[i],
                    "permutation", p)

    # Across layers, positions differ between layers but not between nets; means over sampled
    # positions would then share their sampling noise on the diagonal only, and the diagonal
    # would win by construction. Without exact spatial means, net A therefore uses one half of
    # each image's positions and net B the other, in every cell alike.
    cross_a, source_a = zip(*[_pooled(act_a, layer, half=0) for layer in layers])
    cross_b, source_b = zip(*[_pooled(act_b, layer, half=1) for layer in layers])
    if "position_halves" in source_a:
        log("no image_mean in the activation files: cross-layer maps use disjoint halves of the "
            "sampled positions, a noisy estimate of each image's spatial mean")
    maps = cross_layer(measures, cfg, list(cross_a), list(cross_b), kernel_images)
    for name, values in maps.items():
        n_rows = n_pooled if name in ("rbf_cka", *PER_INPUT) else n_images
        for i, la in enumerate(layers):
            for j, lb in enumerate(layers):
                image_rows = "exact" if source_a[i] == source_b[j] == "exact" else "position_halves"
                add("cross_layer", la, lb, name, values[i, j], n_rows, image_rows)
    return pd.DataFrame(rows, columns=COLUMNS)


def _n_rows(name, n_cov, n_native, kernel_rows, n_pooled):
    if name in PER_INPUT:
        return n_pooled
    if name == "rbf_cka":
        return n_native if kernel_rows is None else len(kernel_rows)
    return n_cov if sim.MEASURES[name].cov is not None else n_native


def main(inputs, outputs, params, log):
    cfg = params.cfg
    layers = list(params.layers)
    stats = None
    if params.kind == "trained":
        stats = dict(zip(layers, inputs.stats))
    frame = compare_pair(inputs.a, inputs.b, layers, cfg, params.kind, params.net_a, params.net_b,
                         stats=stats, seeds=tuple(params.seeds) if stats else None)
    out = Path(outputs.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)


if __name__ == "__main__":
    from convergent.steps.common import run_step

    run_step(main, snakemake)  # noqa: F821

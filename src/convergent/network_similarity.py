"""Every whole-layer similarity measure (:mod:`convergent.similarity`) between two networks, read
from their activation files: one long table with one row per value.

Two kinds of comparison:

* ``scope = same_layer``: A's layer vs B's same layer on the layer's native paired rows (images ×
  positions for conv layers), as Li et al. and Wang et al. compare. For a pair of trained seeds
  the covariance-based measures come from the streamed statistics (``stats/{layer}.h5``, all
  rows); the others from at most ``max_rows`` rows (RBF CKA: ``kernel_rows`` rows; RSA: one row
  per image, ``kernel_rows`` images). With ``permutations > 0`` the same measures are also
  computed with B's probe images shuffled, whole images at a time (``null = permutation``): the
  value expected by chance. Rows of one image are not independent (neighbouring positions of
  one map), so shuffling rows one by one would break that dependence in the null but not in the
  observed pair, and the null would sit too low (:func:`convergent.significance.permute_inputs`).
* ``scope = cross_layer``: A's layer i vs B's layer j for every i, j, on one row per probe image,
  since rows of different conv layers are not paired: a conv layer's spatial mean over the whole
  map (``input_mean`` in the activation file), an fc layer's values; for probe text, with
  ``pooling: first``, each passage's first-token row instead of its mean over tokens (CLS for
  BERT, the first real token for causal LMs; ``input_first``). RSA and mutual k-NN use the same
  per-input rows.

With ``standardize`` every unit is scaled to unit variance first (native rows, pooled rows, and the
streamed covariances, which become correlations), so that no unit counts more than another: the
rogue dimensions of a transformer's residual stream (:mod:`convergent.rogue_dimensions`) otherwise
dominate the measures that sum over units (linear CKA, Procrustes, RSA). CCA and the matching
correlation are unchanged by it (they are invariant to scaling units); the default is off, the
papers' raw activations.

The pair is either two trained seeds (``kind = trained``) or a trained seed and an untrained
network of the same architecture (``kind = untrained``), the architecture-only baseline. Every
subsample of rows is drawn by :func:`convergent.sampling.seeded_rng` from the config's seed and
the layer's name, never the network's, so both networks are read at the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from convergent import similarity as sim
from convergent.activations import layer_attrs, read_input_rows, read_positions, read_samples
from convergent.correlation import LayerStats
from convergent.progress import progress_callback
from convergent.rogue_dimensions import standardize, standardize_covs
from convergent.sampling import sample_rows, seeded_rng
from convergent.significance import permute_inputs

COLUMNS = ["kind", "net_a", "net_b", "scope", "layer_a", "layer_b", "measure", "null", "permutation",
           "n_rows", "value"]


def measure_kwargs(cfg: dict) -> dict[str, dict]:
    """The config keys of the measures that take parameters, as their keyword arguments."""
    return {"rbf_cka": {"sigma": cfg["rbf_sigma"]}, "svcca": {"keep": cfg["svcca_variance"]},
            "subspace": {"eps": cfg["subspace_eps"], "device": "cpu"},
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
                 log=print, progress=None) -> pd.DataFrame:
    """All rows of the pair's table (:data:`COLUMNS`) for the activation files ``act_a`` and
    ``act_b``. ``cfg``: the `similarity` config section. ``stats``: layer → ``stats/{layer}.h5``
    of the trained ``seeds`` (a, b), whose covariances replace the sampled ones. ``progress``:
    None, True (a tqdm bar) or ``callable(done, total)``, counted in evaluations of every measure:
    per layer the real pair and each permutation, then the cross-layer maps."""
    measures = list(cfg["measures"])
    report = progress_callback(progress, "similarity measures", unit="evaluation")
    total = len(layers) * (1 + cfg["permutations"]) + 1
    done = 0

    def step():
        nonlocal done
        done += 1
        if report is not None:
            report(done, total)

    if report is not None:
        report(0, total)
    rows = []

    def add(scope, la, lb, name, value, n_rows, null="none", permutation=-1):
        rows.append((kind, net_a, net_b, scope, la, lb, name, null, permutation, n_rows, float(value)))

    # One row per probe image, the same images in both nets: paired however a layer is pooled.
    pooled_a = [read_input_rows(act_a, layer, cfg["pooling"]) for layer in layers]
    pooled_b = [read_input_rows(act_b, layer, cfg["pooling"]) for layer in layers]
    scale = standardize if cfg["standardize"] else (lambda x: x)
    pooled_a, pooled_b = [scale(x) for x in pooled_a], [scale(x) for x in pooled_b]
    n_images = pooled_a[0].shape[0]
    kernel_images = sample_rows(n_images, cfg["kernel_rows"], seeded_rng(cfg["seed"], "images"))
    n_pooled = n_images if kernel_images is None else len(kernel_images)

    for i, layer in enumerate(layers):
        n = int(layer_attrs(act_a, layer)["n_samples"])
        native_rows = sample_rows(n, cfg["max_rows"], seeded_rng(cfg["seed"], layer, "native"))
        native_a = scale(read_samples(act_a, layer, native_rows))
        native_b = scale(read_samples(act_b, layer, native_rows))
        kernel_rows = sample_rows(len(native_a), cfg["kernel_rows"], seeded_rng(cfg["seed"], layer, "kernel"))
        covs = None
        if stats is not None:
            pair = LayerStats.load(stats[layer]).pair(*seeds)
            covs = (pair.cov_aa, pair.cov_bb, pair.cov_ab)
            if cfg["standardize"]:
                covs = standardize_covs(*covs)
        values = same_layer(measures, cfg, native_a, native_b, pooled_a[i], pooled_b[i], covs,
                            kernel_rows, kernel_images)
        n_cov = n if covs is not None else len(native_a)
        for name, value in values.items():
            add("same_layer", layer, layer, name, value, _n_rows(name, n_cov, len(native_a), kernel_rows, n_pooled))
        log(f"{layer}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
        step()
        rng = seeded_rng(cfg["seed"], layer, "permutation")
        row_input = _row_input(act_a, layer, n, native_rows) if cfg["permutations"] else None
        for p in range(cfg["permutations"]):
            perm = permute_inputs(row_input, rng)
            perm_images = rng.permutation(n_images)
            values = same_layer(measures, cfg, native_a, native_b[perm], pooled_a[i],
                                pooled_b[i][perm_images], None, kernel_rows, kernel_images)
            for name, value in values.items():
                add("same_layer", layer, layer, name, value,
                    _n_rows(name, len(native_a), len(native_a), kernel_rows, n_pooled), "permutation", p)
            step()

    maps = cross_layer(measures, cfg, pooled_a, pooled_b, kernel_images)
    step()
    for name, values in maps.items():
        n_rows = n_pooled if name in ("rbf_cka", *PER_INPUT) else n_images
        for i, la in enumerate(layers):
            for j, lb in enumerate(layers):
                add("cross_layer", la, lb, name, values[i, j], n_rows)
    return pd.DataFrame(rows, columns=COLUMNS)


def _row_input(path, layer: str, n: int, rows) -> np.ndarray:
    """The probe input of each native row (a vector layer's rows are its inputs)."""
    positions = read_positions(path, layer)
    row_input = np.arange(n) if positions is None else positions[:, 0]
    return row_input if rows is None else row_input[rows]


def _n_rows(name, n_cov, n_native, kernel_rows, n_pooled):
    if name in PER_INPUT:
        return n_pooled
    if name == "rbf_cka":
        return n_native if kernel_rows is None else len(kernel_rows)
    return n_cov if sim.MEASURES[name].cov is not None else n_native

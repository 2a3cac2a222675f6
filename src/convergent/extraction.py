"""Running the probe set through a network and writing the activation HDF5 file.

Any network and any of its layers: the layers are read through :mod:`convergent.probing` (FX graph
nodes or forward hooks), brought into their canonical kind (spatial map, token sequence, vector),
and written as paired rows. The file contract is documented in :mod:`convergent.activations`.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from convergent import __version__
from convergent.activations import INPUT_MEAN, TOP_DTYPE, sample_positions
from convergent.architectures import LayerSpec
from convergent.integrity import NonFiniteError
from convergent.outputs import atomic_output
from convergent.progress import progress_callback
from convergent.provenance import environment_json
from convergent.probing import Probe, ProbeRunner, probe_batch, resolve_probes
from convergent.receptive_fields import receptive_fields


class _TopK:
    """Running top-k (value, image, y, x) per unit over batches, on the device of the activations."""

    def __init__(self, k: int):
        self.k = k
        self.values = self.codes = None

    def update(self, act: torch.Tensor, first_image: int) -> None:
        n, c = act.shape[:2]
        spatial = act.shape[2] * act.shape[3] if act.ndim == 4 else 1
        flat = act.reshape(n, c, spatial).permute(1, 0, 2).reshape(c, n * spatial).float()
        k = min(self.k, flat.shape[1])
        values, where = flat.topk(k, dim=1)
        codes = where + first_image * spatial  # global (image, position) code
        if self.values is not None:
            values = torch.cat([self.values, values], 1)
            codes = torch.cat([self.codes, codes], 1)
            values, keep = values.topk(min(self.k, values.shape[1]), dim=1)
            codes = codes.gather(1, keep)
        self.values, self.codes = values, codes

    def records(self, height: int, width: int) -> np.ndarray:
        codes, values = self.codes.cpu().numpy(), self.values.cpu().numpy()
        out = np.zeros(codes.shape, dtype=TOP_DTYPE)
        spatial = height * width
        out["image"], rest = codes // spatial, codes % spatial
        out["y"], out["x"] = rest // width, rest % width
        out["value"] = values
        return out


def token_grid(tokens: int, image_size: int, max_prefix: int = 8) -> tuple[int, int, int] | None:
    """``(prefix, rows, cols)`` when ``tokens`` are ``prefix`` leading tokens (class, distillation,
    registers) and then a square grid of patches tiling the image (ViT: 17 tokens on 32 px = 1 + 4x4);
    None when no such reading exists."""
    for prefix in range(0, min(max_prefix, tokens - 1) + 1):
        side = int(round((tokens - prefix) ** 0.5))
        if side >= 2 and side * side == tokens - prefix and image_size % side == 0:
            return prefix, side, side
    return None


def extract_activations(
    model: nn.Module,
    probe: Dataset,
    image_index: np.ndarray,
    layers: list[str] | dict[str, Probe],
    out_path: str | os.PathLike,
    cfg: dict,
    root_attrs: dict,
    in_channels: int,
    image_size: int,
    device: torch.device,
    progress=None,
    prepare=None,
) -> None:
    """Run the probe set through ``model`` and write the activation file (atomically).

    ``layers``: resolved probes (``LoadedModel.probes``), or layer names, resolved here against the
    model (the zoo's probe points, or module / FX node names). ``prepare`` adapts a batch to the
    model (``LoadedModel.prepare``). ``progress``: None (silent), True (a tqdm bar) or
    ``callable(done, total)``, counted in batches.
    """
    model = model.cpu().eval()
    if isinstance(layers, dict):
        probes = dict(layers)
    else:
        probes = resolve_probes(model, [LayerSpec(n, n) for n in layers], probe_batch(in_channels, image_size), prepare)
    fields = receptive_fields(model, probes, in_channels, image_size, prepare)
    model = model.to(device)
    out_path = Path(out_path)
    dtype = np.dtype(cfg["dtype"])
    n_images = len(probe)
    loader = DataLoader(probe, batch_size=cfg["batch_size"])
    with atomic_output(out_path) as tmp, h5py.File(tmp, "w") as h5, torch.no_grad(), \
            ProbeRunner(model, probes, prepare) as runner:
        h5.attrs.update({**root_attrs, "layers": list(probes), "convergent_version": __version__,
                         "environment": environment_json(device)})
        h5.create_dataset("probe/image_index", data=np.asarray(image_index, dtype=np.int64))
        state: dict[str, dict] = {}
        report = progress_callback(progress, f"extract {out_path.stem}", unit="batch")
        if report is not None:
            report(0, len(loader))
        for batch_no, (x, _y) in enumerate(loader):
            captured = runner(x.to(device))
            first = batch_no * cfg["batch_size"]
            _refuse_non_finite(captured, out_path, root_attrs, first, len(x), n_images, dtype)
            for layer, probe_ in probes.items():
                act = captured[layer]
                if layer not in state:
                    state[layer] = _open_layer(h5, layer, probe_, act, n_images, cfg, dtype, fields[layer],
                                               image_size)
                st = state[layer]
                st["top"].update(act, first)
                st["min"] = min(st["min"], float(act.min()))
                if act.ndim == 4:
                    lo, hi = np.searchsorted(st["positions"][:, 0], [first, first + len(x)])
                    pos = torch.as_tensor(st["positions"][lo:hi], device=act.device)
                    rows = act[pos[:, 0] - first, :, pos[:, 1], pos[:, 2]]
                    st["samples"][lo:hi] = rows.float().cpu().numpy().astype(dtype)
                    st["input_mean"][first:first + len(x)] = act.float().mean(dim=(2, 3)).cpu().numpy()
                else:
                    st["samples"][first:first + len(x)] = act.float().cpu().numpy().astype(dtype)
            if report is not None:
                report(batch_no + 1, len(loader))
        for layer, st in state.items():
            h, w = st["hw"]
            group = h5[f"layers/{layer}"]
            group.create_dataset("top_activations", data=st["top"].records(h, w))
            group.attrs["signed"] = bool(st["min"] < 0)


def _refuse_non_finite(captured: dict, out_path: Path, root_attrs: dict, first: int, count: int, n_images: int,
                       dtype: np.dtype) -> None:
    """Raise :class:`NonFiniteError` when a layer has NaN/inf values, or values the file's dtype
    cannot hold, naming the network, the layers and how many units: every analysis downstream
    would turn them into NaN far from the cause. Checked per batch, so a broken network stops
    extraction at its first batch."""
    limit = float(np.finfo(dtype).max)
    found = []
    for layer, act in captured.items():
        if bool(torch.isfinite(act).all()) and float(act.abs().max()) <= limit:
            continue  # the usual case: one pass, no copies
        units = act.transpose(0, 1).reshape(act.shape[1], -1)
        bad = ~torch.isfinite(units).all(dim=1)
        over = (units.abs() > limit).any(dim=1) & ~bad
        if bool(bad.any()):
            found.append(f"{layer}: {int(bad.sum())} of {len(bad)} units non-finite")
        if bool(over.any()):
            found.append(f"{layer}: {int(over.sum())} of {len(over)} units beyond {dtype.name}'s range "
                         f"(set config key 'extract.dtype' to float32)")
    if found:
        network = f"{root_attrs.get('architecture', '?')} seed {root_attrs.get('seed', '?')}"
        raise NonFiniteError(
            f"{out_path}: the network ({network}) gives non-finite activations on probe inputs {first}-"
            f"{first + count - 1} of {n_images}: " + "; ".join(found) + ". No activation file was written. A diverged "
            "network: check its training log (loss, held-out accuracy) and retrain it with a lower 'train.lr'")


def _open_layer(h5, layer, probe: Probe, act, n_images, cfg, dtype, field, image_size) -> dict:
    group = h5.create_group(f"layers/{layer}")
    units = act.shape[1]
    mapped = act.ndim == 4  # spatial maps and token sequences ([N, C, T, 1]) have positions
    height, width = (act.shape[2], act.shape[3]) if mapped else (1, 1)
    positions = input_mean = None
    if mapped:
        positions = sample_positions(layer, n_images, height, width, cfg["positions_per_image"],
                                     cfg["position_seed"])
        group.create_dataset("positions", data=positions)
        # The whole map's mean per input: one row per input, comparable across layers of
        # different spatial size (cross-layer similarity), which sampled positions cannot give.
        input_mean = group.create_dataset(INPUT_MEAN, shape=(n_images, units), dtype=np.float32)
    n_rows = len(positions) if mapped else n_images
    chunk_rows = max(1, min(n_rows, (1 << 20) // (units * dtype.itemsize)))
    samples = group.create_dataset("samples", shape=(n_rows, units), dtype=dtype,
                                   chunks=(chunk_rows, units), compression="lzf")
    kind = probe.kind if mapped else "vector"
    group.attrs["kind"] = kind
    group.attrs["shape"] = (units, height, width)
    group.attrs["layout"] = probe.layout
    group.attrs["receptive_field"] = field
    if kind == "tokens":
        grid = token_grid(height, image_size)
        if grid is not None:
            group.attrs["token_grid"] = grid
    return {"samples": samples, "positions": positions, "hw": (height, width), "top": _TopK(cfg["top_k"]),
            "input_mean": input_mean, "min": float("inf")}

"""Running the probe set through a network and writing the activation HDF5 file.

The file contract is documented in :mod:`convergent.activations`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from convergent import __version__
from convergent.activations import TOP_DTYPE, sample_positions
from convergent.models import receptive_field
from convergent.outputs import atomic_output


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


def extract_activations(
    model: nn.Module,
    probe: Dataset,
    image_index: np.ndarray,
    layers: list[str],
    out_path: str | os.PathLike,
    cfg: dict,
    root_attrs: dict,
    in_channels: int,
    image_size: int,
    device: torch.device,
    progress: bool = True,
) -> None:
    """Run the probe set through ``model`` and write the activation file (atomically)."""
    model = model.to(device).eval()
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = [
        modules[model.probe_points[layer]].register_forward_hook(
            lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out.detach()))
        for layer in layers
    ]
    out_path = Path(out_path)
    dtype = np.dtype(cfg["dtype"])
    n_images = len(probe)
    loader = DataLoader(probe, batch_size=cfg["batch_size"])
    try:
        with atomic_output(out_path) as tmp, h5py.File(tmp, "w") as h5, torch.no_grad():
            h5.attrs.update({**root_attrs, "layers": list(layers), "convergent_version": __version__})
            h5.create_dataset("probe/image_index", data=np.asarray(image_index, dtype=np.int64))
            state: dict[str, dict] = {}
            for batch_no, (x, _y) in enumerate(tqdm(loader, desc=f"extract {out_path.stem}", unit="batch",
                                                   disable=not progress, file=sys.stderr)):
                model(x.to(device))
                first = batch_no * cfg["batch_size"]
                for layer in layers:
                    act = captured[layer]
                    if act.ndim == 4 and act.shape[2:] == (1, 1):
                        act = act.flatten(1)  # global pooling: one value per image, like fc
                    if layer not in state:
                        state[layer] = _open_layer(h5, layer, act, n_images, cfg, dtype, model,
                                                   in_channels, image_size)
                    st = state[layer]
                    st["top"].update(act, first)
                    if st["kind"] == "conv":
                        lo, hi = np.searchsorted(st["positions"][:, 0], [first, first + len(x)])
                        pos = torch.as_tensor(st["positions"][lo:hi], device=act.device)
                        rows = act[pos[:, 0] - first, :, pos[:, 1], pos[:, 2]]
                        st["samples"][lo:hi] = rows.float().cpu().numpy().astype(dtype)
                        st["image_mean"][first:first + len(x)] = act.float().mean(dim=(2, 3)).cpu().numpy()
                    else:
                        st["samples"][first:first + len(x)] = act.float().cpu().numpy().astype(dtype)
            for layer, st in state.items():
                h, w = st["hw"]
                h5[f"layers/{layer}"].create_dataset("top_activations", data=st["top"].records(h, w))
    finally:
        for handle in handles:
            handle.remove()


def _open_layer(h5, layer, act, n_images, cfg, dtype, model, in_channels, image_size) -> dict:
    group = h5.create_group(f"layers/{layer}")
    units = act.shape[1]
    kind = "conv" if act.ndim == 4 else "fc"
    height, width = (act.shape[2], act.shape[3]) if kind == "conv" else (1, 1)
    positions = None
    if kind == "conv":
        positions = sample_positions(layer, n_images, height, width, cfg["positions_per_image"],
                                     cfg["position_seed"])
        group.create_dataset("positions", data=positions)
        # The whole map's mean per image: one row per image, comparable across layers of
        # different spatial size (cross-layer similarity), which sampled positions cannot give.
        image_mean = group.create_dataset("image_mean", shape=(n_images, units), dtype=np.float32)
    n_rows = len(positions) if kind == "conv" else n_images
    chunk_rows = max(1, min(n_rows, (1 << 20) // (units * dtype.itemsize)))
    samples = group.create_dataset("samples", shape=(n_rows, units), dtype=dtype,
                                   chunks=(chunk_rows, units), compression="lzf")
    group.attrs["kind"] = kind
    group.attrs["shape"] = (units, height, width)
    group.attrs["receptive_field"] = receptive_field(model, layer, in_channels,
                                                     image_size) if kind == "conv" else (image_size, 0, 0)
    return {"kind": kind, "samples": samples, "positions": positions, "hw": (height, width),
            "top": _TopK(cfg["top_k"]), "image_mean": image_mean if kind == "conv" else None}

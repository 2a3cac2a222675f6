"""Running probe text through a language model and writing the activation HDF5 file.

The same contract as image probes (:mod:`convergent.activations`), with passages for images:

* ``/probe/image_index``: the probed passages' indices in the text file (``/probe/passage_index``
  too); ``/probe/token_ids``, ``/probe/attention_mask``, ``/probe/valid`` ``[n, T]`` (the
  positions that may be sampled: real tokens, special ones only when asked for) and
  ``/probe/tokens`` (token strings, for figures): identical in every seed's file;
* token layers (``kind: tokens``, shape ``(C, T, 1)``): ``positions_per_image`` positions per
  passage sampled over its valid tokens only (padding never appears in a row); ``input_mean`` is
  the mean over the valid tokens, ``input_first`` each passage's first-token row (the position in
  ``/probe/first_token``: CLS for BERT, the first real token for causal LMs, see
  :func:`convergent.text.first_token_positions`); ``top_activations`` ranks valid tokens only (``y`` is the token);
  ``signed`` is read over valid tokens;
* ``receptive_field`` is ``(0, 0, 0)``: every token may attend to the whole passage.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from convergent import __version__
from convergent.activations import INPUT_FIRST, INPUT_MEAN
from convergent.extraction import _TopK, _refuse_non_finite
from convergent.outputs import atomic_output
from convergent.progress import progress_callback
from convergent.probing import Probe, ProbeRunner
from convergent.provenance import environment_json
from convergent.text import TextProbe, sample_token_positions


def extract_text_activations(model: nn.Module, probe: TextProbe, probes: dict[str, Probe],
                             out_path: str | os.PathLike, cfg: dict, root_attrs: dict, device: torch.device,
                             progress=None) -> None:
    """Run the probe passages through ``model`` and write the activation file (atomically)."""
    model = model.to(device).eval()
    out_path = Path(out_path)
    dtype = np.dtype(cfg["dtype"])
    n_inputs, batch_size = len(probe), int(cfg["batch_size"])
    valid_all = torch.as_tensor(probe.valid)
    with atomic_output(out_path) as tmp, h5py.File(tmp, "w") as h5, torch.no_grad(), \
            ProbeRunner(model, probes) as runner:
        h5.attrs.update({**root_attrs, "layers": list(probes), "convergent_version": __version__,
                         "environment": environment_json(device)})
        _write_probe(h5, probe)
        state: dict[str, dict] = {}
        starts = range(0, n_inputs, batch_size)
        report = progress_callback(progress, f"extract {out_path.stem}", unit="batch")
        if report is not None:
            report(0, len(starts))
        for batch_no, first in enumerate(starts):
            last = min(first + batch_size, n_inputs)
            batch = {k: v.to(device) for k, v in probe.batch(first, last).items()}
            captured = runner(batch)
            _refuse_non_finite(captured, out_path, root_attrs, first, last - first, n_inputs, dtype)
            valid = valid_all[first:last].to(device)
            for layer, probe_ in probes.items():
                act = captured[layer]
                if layer not in state:
                    state[layer] = _open_layer(h5, layer, probe_, act, probe, cfg, dtype)
                _write_batch(state[layer], act, valid, first, last, dtype)
            if report is not None:
                report(batch_no + 1, len(starts))
        for layer, st in state.items():
            group = h5[f"layers/{layer}"]
            group.create_dataset("top_activations", data=st["top"].records(st["tokens"], 1))
            group.attrs["signed"] = bool(st["min"] < 0)


def _write_probe(h5: h5py.File, probe: TextProbe) -> None:
    h5.create_dataset("probe/image_index", data=np.asarray(probe.passage_index, dtype=np.int64))
    h5.create_dataset("probe/passage_index", data=np.asarray(probe.passage_index, dtype=np.int64))
    h5.create_dataset("probe/token_ids", data=probe.input_ids, compression="lzf")
    h5.create_dataset("probe/attention_mask", data=probe.attention_mask.astype(np.int8), compression="lzf")
    h5.create_dataset("probe/valid", data=probe.valid, compression="lzf")
    h5.create_dataset("probe/first_token", data=np.asarray(probe.first_token, dtype=np.int64))
    strings = h5py.string_dtype("utf-8")
    h5.create_dataset("probe/tokens", data=np.asarray(probe.tokens, dtype=object), dtype=strings)
    h5.create_dataset("probe/passages", data=np.asarray(probe.passages, dtype=object), dtype=strings)


def _open_layer(h5, layer: str, probe_: Probe, act: torch.Tensor, probe: TextProbe, cfg: dict, dtype) -> dict:
    group = h5.create_group(f"layers/{layer}")
    units, n_inputs = act.shape[1], len(probe)
    tokens = act.shape[2] if act.ndim == 4 else 1
    if act.ndim == 4 and act.shape[3] != 1:
        raise ValueError(f"layer {layer!r} of a language model gives a map {list(act.shape[1:])}; "
                         "probe token sequences [N, T, C] or vectors")
    positions = None
    if act.ndim == 4:
        if tokens != probe.image_size:
            raise ValueError(f"layer {layer!r} has {tokens} positions for passages of {probe.image_size} tokens; "
                             "probe layers with one position per token")
        positions = sample_token_positions(layer, probe.valid, int(cfg["positions_per_image"]),
                                           int(cfg["position_seed"]))
        group.create_dataset("positions", data=positions)
        group.create_dataset(INPUT_MEAN, shape=(n_inputs, units), dtype=np.float32)
        group.create_dataset(INPUT_FIRST, shape=(n_inputs, units), dtype=np.float32)
    n_rows = len(positions) if positions is not None else n_inputs
    chunk_rows = max(1, min(n_rows, (1 << 20) // (units * dtype.itemsize)))
    group.create_dataset("samples", shape=(n_rows, units), dtype=dtype, chunks=(chunk_rows, units),
                         compression="lzf")
    group.attrs["kind"] = "tokens" if positions is not None else "vector"
    group.attrs["shape"] = (units, tokens, 1)
    group.attrs["layout"] = probe_.layout
    group.attrs["receptive_field"] = (0, 0, 0)
    return {"group": group, "positions": positions, "tokens": tokens, "top": _TopK(int(cfg["top_k"])),
            "min": float("inf"), "first": torch.as_tensor(probe.first_token)}


def _write_batch(st: dict, act: torch.Tensor, valid: torch.Tensor, first: int, last: int, dtype) -> None:
    group = st["group"]
    if st["positions"] is None:  # one row per passage (a pooled output)
        group["samples"][first:last] = act.float().cpu().numpy().astype(dtype)
        st["min"] = min(st["min"], float(act.min()))
        return
    seq = act[..., 0].float()  # [B, C, T]
    mask = valid[:, None, :]
    st["min"] = min(st["min"], float(seq.masked_fill(~mask, float("inf")).min()))
    # Padding and excluded special tokens never rank among a unit's strongest tokens.
    st["top"].update(seq.masked_fill(~mask, float("-inf"))[..., None], first)
    counts = valid.sum(dim=1, keepdim=True).clamp(min=1)
    group[INPUT_MEAN][first:last] = ((seq * mask).sum(dim=2) / counts).cpu().numpy()
    at = st["first"][first:last].to(act.device)
    group[INPUT_FIRST][first:last] = seq[torch.arange(last - first, device=act.device), :, at].cpu().numpy()
    lo, hi = np.searchsorted(st["positions"][:, 0], [first, last])
    pos = torch.as_tensor(st["positions"][lo:hi], device=act.device)
    rows = seq[pos[:, 0] - first, :, pos[:, 1]]
    group["samples"][lo:hi] = rows.cpu().numpy().astype(dtype)

"""``convergent layers``: every layer of the configured model that can be probed, in forward order.

For each: the name to put in ``model.layers``, its kind (spatial map ``[C, H, W]``, token sequence
``[C, T, 1]``, vector ``[C]``), unit count, whether it has negative values on a probe batch, its
receptive field where it has a local one (computed for the default and configured layers; every
map layer's with ``--all-receptive-fields``), and whether it is a default layer (``*``).
The weights are those of the experiment's first network where it exists already
(``results/<experiment>/models/seed<first>.pt``) or a configured checkpoint; otherwise a random
initialisation (the shapes are the same; signs can differ).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", default="config.yaml", type=Path,
                        help="the experiment's config (default: config.yaml in the working directory)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a checkpoint to read the signs with (default: the first network, if any)")
    fields = parser.add_mutually_exclusive_group()
    fields.add_argument("--all-receptive-fields", action="store_true",
                        help="compute every map layer's receptive field, not only the default and configured "
                             "layers' (each takes a backward pass on a large canvas: minutes for big models)")
    fields.add_argument("--no-receptive-fields", action="store_true", help="compute no receptive fields")
    parser.add_argument("--schema", type=Path, default=None, help="the config schema (default: the workflow's)")


def find_schema(explicit: Path | None) -> Path:
    candidates = [explicit] if explicit else [
        Path("workflow/schemas/config.schema.yaml"),
        Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"]
    for path in candidates:
        if path is not None and path.is_file():
            return path
    raise SystemExit("convergent layers: cannot find workflow/schemas/config.schema.yaml; run it in the "
                     "pipeline's directory or give --schema")


def probe_inputs(dataset_cfg: dict):
    """Three real probe images, or a random batch (and why) when the dataset is not available."""
    import torch

    from convergent.architectures import dataset_geometry
    from convergent.data import load_dataset, probe_set
    from convergent.probing import probe_batch

    try:
        splits = load_dataset(dataset_cfg)
        probe, _ = probe_set(splits, dataset_cfg)
        return splits.geometry, torch.stack([probe[i][0] for i in range(min(3, len(probe)))]), "3 probe images"
    except Exception as error:  # noqa: BLE001 (offline, not downloaded: shapes do not need the images)
        channels, classes, size = dataset_geometry(dataset_cfg)
        reason = str(error).split(". ")[0][:120]
        return (channels, classes or 1000, size), probe_batch(channels, size), f"random inputs ({reason})"


def text_inputs(config: dict):
    """Three probe passages, tokenized with the model's tokenizer (or token ids 1.. without one)."""
    from convergent.models import text_probe_batch

    try:
        from convergent.huggingface import load_tokenizer, tokenizer_source
        from convergent.text import load_text_probe

        probe = load_text_probe({**config["dataset"], "probe_passages": 3},
                                load_tokenizer(*tokenizer_source(config["model"])))
        return probe.geometry, probe.batch(0, 3), "3 probe passages"
    except Exception as error:  # noqa: BLE001 (no text file yet: shapes do not need it)
        batch = text_probe_batch()
        return (0, None, batch["input_ids"].shape[1]), batch, f"token ids 1.. ({str(error)[:100]})"


def hidden_state_rows(module, batch) -> list[dict]:
    """The residual stream (``hidden_states.{i}``, read from the model's output) as listed rows."""
    from convergent import huggingface
    from convergent.probing import resolve_probes

    specs = huggingface.layer_specs(None, huggingface.num_hidden_layers(module))
    probes = resolve_probes(module, specs, batch, None, mode="hooks")
    return [{"name": s.name, "output": "hidden_states", "kind": probes[s.name].kind, "shape": list(probes[s.name].shape),
             "units": probes[s.name].units, "signed": probes[s.name].signed, "note": "residual stream",
             "probe": probes[s.name], "default": True} for s in specs]


def default_weights(config: dict, explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    first = sorted(config["seeds"])[0]
    made = Path("results") / config["experiment"] / "models" / f"seed{first}.pt"
    if made.is_file():
        return made
    checkpoints = config.get("checkpoints") or {}
    given = Path(checkpoints[str(first)]) if str(first) in checkpoints else None
    return given if given is not None and given.is_file() else None


def _field(rf) -> str:
    if rf is None:
        return ""
    size, stride, offset = rf
    return "whole input" if stride == 0 else f"{size} px, stride {stride}, offset {offset}"


def run(args) -> int:
    from convergent.architectures import layer_specs
    from convergent.config import ConfigError, validate
    from convergent.models import load_model
    from convergent.layer_listing import list_layers

    try:
        config = validate(yaml.safe_load(args.configfile.read_text()), find_schema(args.schema))
    except (OSError, ConfigError) as error:
        print(f"convergent layers: {error}", file=sys.stderr)
        return 2
    model_cfg = config["model"]
    text = model_cfg.get("huggingface") is not None
    geometry, batch, what = text_inputs(config) if text else probe_inputs(config["dataset"])
    weights = default_weights(config, args.weights)
    try:
        loaded = load_model(model_cfg, geometry, pretrained=False, checkpoint=weights)
    except ValueError as error:
        print(f"convergent layers: {error}", file=sys.stderr)
        return 2
    how, rows = list_layers(loaded.module, batch, loaded.prepare)
    if text:  # the default layers of a language model are its hidden states, not its blocks' modules
        for row in rows:
            row["default"] = None
        rows = hidden_state_rows(loaded.module, batch) + rows
    fields = {}
    if not args.no_receptive_fields and not text:
        from convergent.receptive_fields import receptive_fields

        configured = {spec.target for spec in layer_specs(model_cfg) or []}
        probes = {row["name"]: row["probe"] for row in rows if row["probe"] is not None and row["probe"].kind == "spatial"
                  and (args.all_receptive_fields or row["default"] or row["name"] in configured)}
        if probes:
            print(f"computing receptive fields of {len(probes)} map layers ...", file=sys.stderr)
            fields = receptive_fields(loaded.module, probes, geometry[0], geometry[2], loaded.prepare)
    channels, _, size = geometry
    shape = f"{size} tokens per passage" if text else f"{channels}x{size}x{size}"
    print(f"{loaded.name}: input {shape}; read through {how}")
    print(f"weights: {weights if weights else 'random initialisation (no network made or given yet)'}; "
          f"signs on {what}")
    print("* = a default layer (model.layers: null); (= block): the block whose output it is\n")
    table = [("", "layer", "kind", "shape", "units", "signed", "receptive field / note")]
    for row in rows:
        rf = fields.get(row["name"]) if row["kind"] == "spatial" else ((0, 0, 0) if row["kind"] else None)
        default = row["default"] if row["probe"] is not None else None
        name = row["name"] if default in (None, False, True, row["name"]) else f"{row['name']} (= {default})"
        if row["kind"] == "spatial" and rf is None and not args.no_receptive_fields:
            row["note"] = row["note"] or "(--all-receptive-fields)"
        table.append(("*" if default else "", name, row["kind"],
                      "x".join(map(str, row["shape"])) if row["shape"] else row["output"], str(row["units"]),
                      {True: "yes", False: "no"}.get(row["signed"], ""), row["note"] or _field(rf)))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    probeable = sum(row["probe"] is not None for row in rows)
    print(f"\n{probeable} probe-able layers of {len(rows)}; put names in config key 'model.layers'")
    return 0

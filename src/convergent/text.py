"""Probe text for language models (``dataset.name: text``): passages, tokenized once for every seed.

The probe set is a local file (``dataset.path``): one passage per line (``.txt``), or JSON lines
with the passage under ``dataset.text_field`` (``.jsonl``/``.json``); or a dataset of the Hugging
Face ``datasets`` library (``dataset.hub``: a hub id, ``id@revision``, a directory written by
``save_to_disk``, or a builder such as ``json`` with ``dataset.data_files``; ``hub_config``,
``split``, and the column ``text_field``). Empty passages, and passages of fewer than
``dataset.min_words`` words, are skipped.
``dataset.probe_passages`` of them are drawn (seeded, in file order) and tokenized with the model
source's tokenizer, padded and truncated to ``dataset.max_length``. Every seed of a family shares
one tokenizer (checked when a seed is imported: :func:`check_same_tokens`), so token position
``t`` of passage ``i`` is the same token in every network and rows pair across networks.

Which positions may be sampled (:attr:`TextProbe.valid`): real tokens only, never padding
(``attention_mask`` 0) and, unless ``dataset.special_tokens`` is true, never special tokens
(CLS, SEP, BOS, EOS).

Where an analysis needs one row per passage (cross-layer maps, RSA), a passage is either pooled
over its valid tokens (the mean) or represented by its first token (:attr:`TextProbe.first_token`,
:func:`first_token_positions`): the CLS token where the tokenizer puts one first (BERT: a
bidirectional encoder's CLS sees the whole passage, and pre-training shapes it as the summary),
else the first real token (GPT-2, Pythia: a causal model's BOS, if any, is the same input for every
passage; note that a causal model's first real token sees only itself).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEXT_SUFFIXES_JSON = (".jsonl", ".json", ".ndjson")


class TextProbeError(ValueError):
    """The probe text cannot be used; the message names the file, the setting and what to change."""


def read_passages(cfg: dict) -> list[str]:
    """Every non-empty passage (of at least ``min_words`` words) of the configured file or
    ``datasets`` dataset, in order."""
    if cfg.get("hub") and cfg.get("path"):
        raise TextProbeError("config keys 'dataset.path' and 'dataset.hub': give one source of probe text, not both")
    passages = _dataset_passages(cfg) if cfg.get("hub") else _file_passages(cfg)
    min_words = int(cfg.get("min_words", 0))
    kept = [p for p in passages if len(p.split()) >= min_words]
    if not kept:
        where = cfg.get("hub") or cfg.get("path")
        raise TextProbeError(f"config key 'dataset.min_words': none of the {len(passages)} passages of {where} "
                             f"has {min_words} words")
    return kept


def _dataset_passages(cfg: dict) -> list[str]:
    """The passages of a ``datasets`` dataset: column ``text_field`` of split ``split``."""
    try:
        import datasets
    except ImportError:
        raise TextProbeError("config key 'dataset.hub': the datasets package is not installed; install the "
                             "optional extra: pip install 'convergent[text]' (or pip install datasets)") from None
    from convergent.huggingface import split_revision

    name, revision = split_revision(str(cfg["hub"]))
    split, column = cfg.get("split", "train"), cfg.get("text_field", "text")
    saved = Path(name)
    try:
        if (saved / "dataset_dict.json").is_file() or (saved / "dataset_info.json").is_file():
            table = datasets.load_from_disk(str(saved))  # written by save_to_disk: no builder, no cache
            if isinstance(table, datasets.DatasetDict):
                if split not in table:
                    raise TextProbeError(f"config key 'dataset.split': {saved} has no split {split!r} "
                                         f"(it has {sorted(table)})")
                table = table[split]
        else:
            table = datasets.load_dataset(name, cfg.get("hub_config"), split=split, revision=revision,
                                          data_files=cfg.get("data_files"))
    except TextProbeError:
        raise
    except Exception as error:  # noqa: BLE001 (hub, cache, split and file errors all mean: not loadable)
        first = str(error).splitlines()[0] if str(error) else ""
        raise TextProbeError(
            f"config key 'dataset.hub': the dataset {name!r} (config {cfg.get('hub_config')!r}, split {split!r}) "
            f"could not be loaded ({type(error).__name__}: {first}). Offline it must be in the datasets cache "
            f"(HF_HOME now {os.environ.get('HF_HOME', '~/.cache/huggingface (unset)')}) or a directory written by "
            "save_to_disk, or give a local text file in 'dataset.path'") from error
    if column not in table.column_names:
        raise TextProbeError(f"config key 'dataset.text_field': the dataset {name!r} has no column {column!r} "
                             f"(it has {table.column_names})")
    passages = [str(text) for text in table[column] if text is not None and str(text).strip()]
    if not passages:
        raise TextProbeError(f"config key 'dataset.hub': column {column!r} of {name!r} ({split}) holds no passages")
    return passages


def _file_passages(cfg: dict) -> list[str]:
    if not cfg.get("path"):
        raise TextProbeError("config key 'dataset.path': dataset 'text' needs a text file (one passage per line, "
                             "or JSON lines with a text field) or a datasets dataset in 'dataset.hub'")
    path = Path(str(cfg["path"]))
    if not path.is_file():
        raise TextProbeError(f"config key 'dataset.path': the text file {path} does not exist")
    field = cfg.get("text_field", "text")
    passages = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if path.suffix in TEXT_SUFFIXES_JSON:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise TextProbeError(f"{path}, line {number}: not JSON ({error})") from None
                if not isinstance(record, dict) or field not in record:
                    raise TextProbeError(f"{path}, line {number}: no field {field!r} (config key 'dataset.text_field')")
                text = str(record[field])
            else:
                text = line.rstrip("\n")
            if text.strip():
                passages.append(text)
    if not passages:
        raise TextProbeError(f"config key 'dataset.path': the text file {path} holds no passages")
    return passages


def probe_passage_index(cfg: dict, n_passages: int) -> np.ndarray:
    """Which passages are probed: ``probe_passages`` of them, seeded by ``probe_seed``, sorted."""
    n_probe = int(cfg.get("probe_passages", 1000))
    if n_probe > n_passages:
        raise TextProbeError(f"config key 'dataset.probe_passages': {n_probe} exceeds the {n_passages} passages "
                             f"in {cfg.get('hub') or cfg.get('path')}")
    rng = np.random.default_rng(cfg.get("probe_seed", 0))
    return np.sort(rng.choice(n_passages, size=n_probe, replace=False))


def encode(tokenizer, passages: list[str], max_length: int) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` and ``special_tokens_mask`` ``[n, max_length]`` (int64)."""
    encoded = tokenizer(passages, padding="max_length", truncation=True, max_length=max_length,
                        return_special_tokens_mask=True, return_attention_mask=True)
    return {key: np.asarray(encoded[key], dtype=np.int64)
            for key in ("input_ids", "attention_mask", "special_tokens_mask")}


@dataclass
class TextProbe:
    """The tokenized probe passages: what every seed reads, position for position."""

    passages: list[str]
    passage_index: np.ndarray  # into the file's passages
    input_ids: np.ndarray  # [n, T]
    attention_mask: np.ndarray  # [n, T]
    valid: np.ndarray  # [n, T] bool: positions that may be sampled
    tokens: list[list[str]]  # [n][T] token strings, for figures
    first_token: np.ndarray | None = None  # [n]: the position of each passage's first-token row
    name: str = "text"
    in_channels: int = 0
    num_classes: int | None = None

    @property
    def image_size(self) -> int:  # the padded length, where image datasets have a side
        return int(self.input_ids.shape[1])

    @property
    def geometry(self) -> tuple[int, None, int]:
        return 0, None, self.image_size

    def __len__(self) -> int:
        return len(self.passage_index)

    def batch(self, start: int, stop: int) -> dict:
        import torch

        return {"input_ids": torch.as_tensor(self.input_ids[start:stop]),
                "attention_mask": torch.as_tensor(self.attention_mask[start:stop])}


def load_text_probe(cfg: dict, tokenizer) -> TextProbe:
    """The configured probe passages, tokenized (see the module docstring)."""
    passages = read_passages(cfg)
    index = probe_passage_index(cfg, len(passages))
    chosen = [passages[i] for i in index]
    encoded = encode(tokenizer, chosen, int(cfg.get("max_length", 128)))
    valid = encoded["attention_mask"].astype(bool)
    if not cfg.get("special_tokens", False):
        valid &= ~encoded["special_tokens_mask"].astype(bool)
    tokens = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in encoded["input_ids"]]
    first = first_token_positions(encoded["input_ids"], encoded["attention_mask"], encoded["special_tokens_mask"],
                                  getattr(tokenizer, "cls_token_id", None))
    return TextProbe(chosen, index, encoded["input_ids"], encoded["attention_mask"], valid, tokens, first)


def first_token_positions(input_ids: np.ndarray, attention_mask: np.ndarray, special_tokens_mask: np.ndarray,
                          cls_token_id: int | None) -> np.ndarray:
    """``[n]``: per passage, the position of its CLS token when its first attended token is the
    tokenizer's CLS (BERT), else of its first attended non-special token (causal LMs: after any
    left padding and BOS); a passage of special tokens only falls back to its first attended one.

    >>> ids = np.array([[101, 7, 8, 102, 0], [0, 0, 50, 7, 8]])   # BERT-like; left-padded with a BOS (50)
    >>> mask = np.array([[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    >>> special = np.array([[1, 0, 0, 1, 1], [1, 1, 1, 0, 0]])
    >>> first_token_positions(ids, mask, special, 101).tolist(), first_token_positions(ids[1:], mask[1:], special[1:], None).tolist()
    ([0, 3], [3])
    """
    attended = np.asarray(attention_mask).astype(bool)
    real = attended & ~np.asarray(special_tokens_mask).astype(bool)
    first_attended = np.argmax(attended, axis=1)
    rows = np.arange(len(attended))
    is_cls = (np.asarray(input_ids)[rows, first_attended] == cls_token_id if cls_token_id is not None
              else np.zeros(len(rows), dtype=bool))
    first_real = np.where(real.any(axis=1), np.argmax(real, axis=1), first_attended)
    return np.where(is_cls, first_attended, first_real).astype(np.int64)


def check_same_tokens(reference, other, passages: list[str], max_length: int, what: str) -> None:
    """Raise unless ``other`` tokenizes every passage exactly as ``reference`` does: token rows are
    paired across networks only when their tokenizers agree."""
    a = encode(reference, passages, max_length)
    b = encode(other, passages, max_length)
    for key in ("input_ids", "attention_mask"):
        differ = np.flatnonzero((a[key] != b[key]).any(axis=1))
        if differ.size:
            i = int(differ[0])
            raise TextProbeError(
                f"{what} tokenizes the probe text differently from the model source's tokenizer: first at passage "
                f"{i} ({passages[i][:60]!r}: {a['input_ids'][i][:12].tolist()} vs {b['input_ids'][i][:12].tolist()}; "
                f"{differ.size} passages differ). Token rows would not pair across networks; give seeds that "
                "share a tokenizer, or set config key 'model.tokenizer'")


def sample_token_positions(layer: str, valid: np.ndarray, per_input: int, seed: int) -> np.ndarray:
    """``[n * per_input, 3]`` rows (passage, token, 0): ``per_input`` distinct valid positions of
    every passage, from an RNG seeded by the config seed and the layer name only (the same for
    every network). A passage with fewer valid tokens is an error naming the settings to change."""
    from convergent.sampling import seeded_rng

    counts = valid.sum(axis=1)
    short = np.flatnonzero(counts < per_input)
    if short.size:
        i = int(short[0])
        raise TextProbeError(
            f"{short.size} of {len(valid)} probe passages have fewer than extract.positions_per_image = {per_input} "
            f"real tokens (padding and special tokens excluded); the first is probe passage {i} with {int(counts[i])}. "
            "Lower config key 'extract.positions_per_image', raise 'dataset.max_length', or probe longer passages")
    rng = seeded_rng(seed, layer)
    rows = []
    for i, row in enumerate(valid):
        chosen = np.sort(rng.choice(np.flatnonzero(row), size=per_input, replace=False))
        rows.append(np.stack([np.full(per_input, i), chosen, np.zeros(per_input, dtype=np.int64)], axis=1))
    return np.concatenate(rows).astype(np.int64)


def token_context(tokens: list[str | None], position: int, width: int) -> str:
    """The token at ``position`` with ``width`` tokens either side (padding, None, left out), the
    token itself in [brackets]."""
    lo, hi = max(0, position - width), min(len(tokens), position + width + 1)
    shown = [f"[{t}]" if j == position else t for j, t in zip(range(lo, hi), tokens[lo:hi]) if t is not None]
    return " ".join(shown)


def read_probe_tokens(path: str | os.PathLike) -> list[list[str | None]] | None:
    """The probe passages' token strings stored in an activation file, padding as None (None for
    image probes)."""
    import h5py

    with h5py.File(path, "r") as h5:
        if "probe/tokens" not in h5:
            return None
        data = h5["probe/tokens"][()]
        mask = h5["probe/attention_mask"][()]
    return [[(t.decode() if isinstance(t, bytes) else str(t)) if m else None for t, m in zip(row, keep)]
            for row, keep in zip(data, mask)]

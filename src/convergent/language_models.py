"""Seeds of a language-model family as convergent checkpoints (rules `import_checkpoint`, `untrained`).

A seed's weights come from a hub id or ``save_pretrained`` directory (``checkpoints:``), or are
drawn fresh from the configuration (untrained seeds, the chance baseline). Either way the result
is a convergent checkpoint (``models/seed{n}.pt``) holding the weights and the model's
configuration (``hf_config``), so extraction rebuilds it without touching the hub. Importing a
seed also checks that its own tokenizer (where its directory or hub id has one) tokenizes the
probe text exactly as the model source's tokenizer, and that the configured hidden states exist.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from convergent.architectures import dataset_geometry, describe_source, layer_specs


def _geometry(dataset_cfg: dict) -> SimpleNamespace:
    channels, classes, length = dataset_geometry(dataset_cfg)
    return SimpleNamespace(name=dataset_cfg["name"], in_channels=channels, num_classes=classes, image_size=length)


def _payload(module, model_cfg: dict, dataset_cfg: dict, seed: int, metrics: dict) -> dict:
    from convergent.training import checkpoint_payload

    payload = checkpoint_payload(module, model_cfg, _geometry(dataset_cfg), seed, metrics)
    payload["hf_config"] = module.config.to_dict()
    return payload


def check_layers(module, model_cfg: dict) -> None:
    """Raise unless every configured ``hidden_states.{i}`` exists in ``module``."""
    from convergent import huggingface

    huggingface.layer_specs(layer_specs(model_cfg), huggingface.num_hidden_layers(module))


def check_tokenizer(checkpoint: str, model_cfg: dict, dataset_cfg: dict, key: str) -> str:
    """Compare the seed's own tokenizer (if it ships one) with the model source's on the probe
    text file; the outcome, for the log."""
    from convergent import huggingface
    from convergent.text import check_same_tokens, read_passages

    reference_source = huggingface.tokenizer_source(model_cfg)
    own_source = huggingface.split_revision(checkpoint)
    if own_source == reference_source:
        return "tokenizer: the model source's own"
    try:
        own = huggingface.load_tokenizer(*own_source, key=key)
    except huggingface.HuggingFaceError:
        return f"tokenizer: {checkpoint} has none; the model source's ({reference_source[0]}) is used"
    reference = huggingface.load_tokenizer(*reference_source)
    passages = read_passages(dataset_cfg)
    check_same_tokens(reference, own, passages, int(dataset_cfg.get("max_length", 128)),
                      f"the tokenizer of {checkpoint} (config key '{key}')")
    return f"tokenizer: {checkpoint}'s tokenizes all {len(passages)} passages as {reference_source[0]}'s"


def import_seed(model_cfg: dict, dataset_cfg: dict, checkpoint: str, seed: int) -> tuple[dict, dict, str]:
    """``(payload, metrics, note)`` for a seed whose weights are at ``checkpoint``."""
    from convergent.models import load_model

    began = time.perf_counter()
    key = f"checkpoints.{seed}"
    note = check_tokenizer(str(checkpoint), model_cfg, dataset_cfg, key)
    loaded = load_model(model_cfg, dataset_geometry(dataset_cfg), checkpoint=str(checkpoint), checkpoint_key=key)
    check_layers(loaded.module, model_cfg)
    metrics = {"seed": seed, "architecture": describe_source(model_cfg), "dataset": dataset_cfg["name"],
               "epochs": None, "heldout_accuracy": None, "train_accuracy": None,
               "seconds": time.perf_counter() - began, "trained": True, "imported_from": str(checkpoint),
               "history": []}
    return _payload(loaded.module, model_cfg, dataset_cfg, seed, metrics), metrics, note


def untrained_seed(model_cfg: dict, dataset_cfg: dict, seed: int) -> tuple[dict, dict]:
    """``(payload, metrics)`` for a randomly initialised network of the configured architecture."""
    from convergent.models import load_model

    loaded = load_model(model_cfg, dataset_geometry(dataset_cfg), seed=seed, pretrained=False)
    check_layers(loaded.module, model_cfg)
    metrics = {"seed": seed, "architecture": describe_source(model_cfg), "dataset": dataset_cfg["name"],
               "epochs": 0, "heldout_accuracy": None, "train_accuracy": None, "seconds": 0.0, "trained": False,
               "history": []}
    return _payload(loaded.module, model_cfg, dataset_cfg, seed, metrics), metrics

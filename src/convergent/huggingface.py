"""Language models from the Hugging Face ``transformers`` library: the ``huggingface`` model source.

``model.huggingface`` names the architecture (a hub id such as ``google/multiberts-seed_0`` or a
local directory written by ``save_pretrained``) with an optional ``revision``; its configuration
and tokenizer define the network that every seed's weights are loaded into. The seeds' weights
come from ``checkpoints:``, one hub id or directory per seed (``id@revision`` for an intermediate
training step, e.g. ``EleutherAI/pythia-160m-seed1@step1000``); untrained seeds are built from
the configuration with fresh random weights (``AutoModel.from_config``), the chance baseline.
Language models are read, never trained, by the pipeline.

The network is loaded with ``AutoModel`` (the base model: a ``BertModel`` for a
``BertForPreTraining`` checkpoint, a ``GPTNeoXModel`` for a ``GPTNeoXForCausalLM`` one), with
``output_hidden_states`` on, so the residual stream after each block is a layer named
``hidden_states.{i}`` (0: the embeddings); any module is a layer by its name
(``encoder.layer.3.output``, ``layers.2.mlp.act``). Models are fed batches
``{"input_ids", "attention_mask"}`` (:mod:`convergent.text`).

Needs the optional extra ``[text]`` (``transformers``); without it the error says so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from convergent.architectures import LayerSpec

HIDDEN_STATE = re.compile(r"^hidden_states\.(\d+)$")
EXTRA_HINT = ("the transformers package is not installed; install the optional extra: "
              "pip install 'convergent[text]' (or pip install transformers)")


class HuggingFaceError(ValueError):
    """A Hugging Face model or tokenizer cannot be loaded; the message says why and what to do."""


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise HuggingFaceError(f"config key 'model.huggingface': {EXTRA_HINT}") from None
    transformers.logging.set_verbosity_error()  # "weights not used" notices for pre-training heads
    return transformers


def split_revision(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """``"id@step1000"`` -> ``("id", "step1000")``; a local path is never split (it exists)."""
    if "@" in spec and not Path(spec).exists():
        spec, _, revision = spec.rpartition("@")
    return spec, revision


def _hf_home() -> str:
    return os.environ.get("HF_HOME", "~/.cache/huggingface (unset)")


def _unavailable(what: str, name: str, revision: str | None, key: str, error: Exception) -> HuggingFaceError:
    at = f" at revision {revision!r}" if revision else ""
    if Path(name).is_dir():
        return HuggingFaceError(f"config key '{key}': the directory {name} holds no loadable {what} "
                                f"({type(error).__name__}: {error}); it must be written by save_pretrained "
                                f"(config.json and model.safetensors / pytorch_model.bin, tokenizer files)")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a hub id is "name" or "owner/name"
        return HuggingFaceError(f"config key '{key}': there is no directory {name} (and it is not a hub id)")
    return HuggingFaceError(
        f"config key '{key}': the {what} {name!r}{at} could not be loaded ({type(error).__name__}: "
        f"{str(error).splitlines()[0] if str(error) else ''}). Offline, it must already be in the hub cache "
        f"under HF_HOME (now {_hf_home()}): download it where there is network (huggingface-cli download "
        f"{name}{' --revision ' + revision if revision else ''}) and copy the cache, or give a local directory")


def load_config(name: str, revision: str | None = None, key: str = "model.huggingface", **kwargs):
    transformers = import_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(name, revision=revision, **kwargs)
    except Exception as error:  # noqa: BLE001 (hub, file and format errors all mean: not loadable)
        raise _unavailable("model configuration", name, revision, key, error) from error
    return _reading_config(config)


def _reading_config(config):
    config.output_hidden_states = True  # the residual stream, layer by layer
    if hasattr(config, "use_cache"):
        config.use_cache = False  # no key/value cache: nothing is generated
    return config


def build(model_cfg: dict, pretrained_from: str | None = None, config_dict: dict | None = None):
    """The configured network: weights from ``pretrained_from`` (a hub id or directory, with an
    optional ``@revision``) when given, else freshly initialised (seed the RNG first) from
    ``config_dict`` (a saved configuration) or from ``model.huggingface``'s configuration."""
    transformers = import_transformers()
    kwargs = dict(model_cfg.get("kwargs") or {})
    if pretrained_from is not None:
        name, revision = split_revision(str(pretrained_from), model_cfg.get("revision")
                                        if str(pretrained_from) == str(model_cfg["huggingface"]) else None)
        try:
            module = transformers.AutoModel.from_pretrained(name, revision=revision, **kwargs)
        except Exception as error:  # noqa: BLE001
            raise _unavailable("model", name, revision, "checkpoints", error) from error
        _reading_config(module.config)
        return module.float().eval()
    if config_dict is not None:
        config = transformers.AutoConfig.for_model(**config_dict)
        config = _reading_config(config)
    else:
        config = load_config(*split_revision(str(model_cfg["huggingface"]), model_cfg.get("revision")))
    module = transformers.AutoModel.from_config(config, **kwargs)
    return module.float().eval()


def load_tokenizer(name: str, revision: str | None = None, key: str = "model.huggingface"):
    """The tokenizer of a hub id or directory; a pad token is set (to EOS) where it has none
    (GPT-style tokenizers), since the probe passages are padded to one length."""
    transformers = import_transformers()
    name, revision = split_revision(name, revision)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, revision=revision)
    except Exception as error:  # noqa: BLE001
        raise _unavailable("tokenizer", name, revision, key, error) from error
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise HuggingFaceError(f"config key '{key}': the tokenizer of {name} has neither a pad nor an "
                                   "end-of-sequence token to pad passages with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_source(model_cfg: dict) -> tuple[str, str | None]:
    """Where the tokenizer comes from: ``model.tokenizer`` if given, else ``model.huggingface``."""
    given = model_cfg.get("tokenizer")
    if given:
        return split_revision(str(given))
    return split_revision(str(model_cfg["huggingface"]), model_cfg.get("revision"))


def layer_specs(specs: list[LayerSpec] | None, num_hidden_layers: int) -> list[LayerSpec]:
    """Configured layers with ``hidden_states.{i}`` read from the model's output (target ``""``,
    selector ``("hidden_states", i)``); None: every hidden state, embeddings to last block."""
    if specs is None:
        specs = [LayerSpec(f"hidden_states.{i}", f"hidden_states.{i}") for i in range(num_hidden_layers + 1)]
    out = []
    for spec in specs:
        match = HIDDEN_STATE.match(spec.target)
        if match and not spec.output:
            index = int(match.group(1))
            if index > num_hidden_layers:
                raise HuggingFaceError(f"config key 'model.layers': {spec.target!r} does not exist: the model has "
                                       f"hidden_states.0 (embeddings) to hidden_states.{num_hidden_layers}")
            spec = LayerSpec(spec.name, "", ("hidden_states", index), spec.layout or "NTC")
        out.append(spec)
    return out


def plannable_without_model(specs: list[LayerSpec] | None) -> bool:
    """Whether the layer names are known without building the model (every one a hidden state):
    then planning needs no hub access; the indices are checked when the model is loaded."""
    return specs is not None and all(HIDDEN_STATE.match(s.target) and not s.output for s in specs)


def num_hidden_layers(module) -> int:
    config = module.config
    for attribute in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(config, attribute, None) is not None:
            return int(getattr(config, attribute))
    raise HuggingFaceError(f"cannot tell how many blocks {type(module).__name__} has; list its layers by "
                           "module name in config key 'model.layers'")

"""Experiment configuration: validation against the JSON schema, with defaults filled in.

Snakemake's own ``snakemake.utils.validate`` reports errors as raw jsonschema dumps; researchers
editing a YAML file want one line per mistake naming the key and what is allowed, so the errors
are rephrased here. The schema (``workflow/schemas/config.schema.yaml``) stays the single source
of truth for keys, types, ranges and defaults.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """The configuration does not match the schema; the message lists every problem."""


def _fill_defaults(instance: Any, schema: dict) -> None:
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance:
            if "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and "properties" in sub and not sub.get("required") \
                    and "oneOf" not in sub:
                instance[key] = {}
        if key in instance:
            _fill_defaults(instance[key], sub)


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    validator, schema = error.validator, error.schema
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"config key '{key}': unknown key(s) {unknown}; allowed keys: {allowed}"
    if validator == "oneOf" and all(set(sub) == {"required"} for sub in schema["oneOf"]):
        keys = [key for sub in schema["oneOf"] for key in sub["required"]]
        given = [k for k in keys if isinstance(error.instance, dict) and k in error.instance]
        return f"config key '{key}': give exactly one of {keys} (given: {given or 'none'})"
    if validator in ("oneOf", "anyOf") and error.context:
        # The alternative of the right type says what is wrong (an object entry with an unknown
        # key), not the others ("expected string").
        near = [e for e in error.context if e.validator != "type"] or list(error.context)
        return _describe(max(near, key=lambda e: len(e.absolute_path)))
    if validator == "required":
        return f"config key '{key}': {error.message}"
    if validator == "enum":
        return f"config key '{key}': {error.instance!r} is not allowed; allowed values: {schema['enum']}"
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        bounds = f"allowed range: [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        return f"config key '{key}': {error.instance!r} is out of range; {bounds}"
    if validator == "type":
        return f"config key '{key}': {error.instance!r} has the wrong type; expected {schema['type']}"
    return f"config key '{key}': {error.message}"


def load_schema(path: str | Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def validate(config: dict, schema: dict | str | Path) -> dict:
    """Return a copy of ``config`` with defaults filled in, or raise :class:`ConfigError`.

    Every violation is listed, one per line, each naming the offending key and the allowed
    values or range, so a user fixes them all in one edit.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    filled = copy.deepcopy(config)
    _fill_defaults(filled, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"invalid configuration ({len(errors)} problem(s)):\n{lines}")
    return filled


def config_hash(section: Any) -> str:
    """A short stable hash of a config section, recorded in outputs for provenance."""
    text = json.dumps(section, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

"""Config fuzzing (issue 16): for every key in the schema, a value of the wrong type, values out of
range, a value outside an enum, an unknown key beside it, and a bad list item are each refused by
validation (which the Snakefile runs before planning any job), naming the key."""

import copy

import jsonschema
import pytest

from conftest import REPO, tiny_config
from convergent.config import ConfigError, load_schema, validate

SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
# one value of each JSON type; a mutation takes the first the key's schema refuses
CANDIDATES = ["zz_wrong", 7, 2.5, True, [], {}, None, -1, [["zz"]]]


def _refused(schema: dict):
    validator = jsonschema.Draft202012Validator(schema)
    return next((value for value in CANDIDATES if not validator.is_valid(value)), None)


def _walk(schema: dict, path: tuple):
    """(path, kind, value, key named) for every mutation of every key under ``schema``."""
    for key, sub in schema.get("properties", {}).items():
        here = path + (key,)
        name = ".".join(here)
        wrong = _refused(sub)
        if wrong is not None or "type" in sub:
            yield here, "type", wrong, name
        low = sub.get("minimum", sub.get("exclusiveMinimum"))
        if low is not None:
            yield here, "below", low - 1 if "minimum" in sub else low, name
        high = sub.get("maximum", sub.get("exclusiveMaximum"))
        if high is not None:
            yield here, "above", high + 1 if "maximum" in sub else high, name
        if "enum" in sub:
            yield here, "enum", "zz_not_an_option", name
        items = sub.get("items")
        if isinstance(items, dict) and _refused(items) is not None:
            yield here, "item", [_refused(items)], f"{name}.0"
        if sub.get("additionalProperties") is False and "properties" in sub:
            yield here + ("zz_unknown_key",), "unknown", 1, name
            yield from _walk(sub, here)


MUTATIONS = list(_walk(SCHEMA, ()))


def _set(config: dict, path: tuple, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return config


@pytest.mark.parametrize("path, kind, value, named", MUTATIONS,
                         ids=[f"{'.'.join(m[0])}-{m[1]}" for m in MUTATIONS])
def test_every_wrong_value_is_refused_naming_its_key(path, kind, value, named):
    base = validate(tiny_config(), SCHEMA)
    if kind == "type" and value is None:
        pytest.skip(f"config key '{'.'.join(path)}' accepts a value of every JSON type")
    with pytest.raises(ConfigError) as caught:
        validate(_set(base, path, value), SCHEMA)
    assert f"config key '{named}'" in str(caught.value), str(caught.value)
    if kind == "unknown":
        assert "zz_unknown_key" in str(caught.value)


def test_the_fuzzing_covers_every_key_of_the_schema(capsys):
    def keys(schema, path=()):
        for key, sub in schema.get("properties", {}).items():
            yield ".".join(path + (key,))
            yield from keys(sub, path + (key,))

    every = set(keys(SCHEMA))
    touched = {".".join(m[0][:-1] if m[1] == "unknown" else m[0]) for m in MUTATIONS}
    untouched = every - touched
    counts = {kind: sum(m[1] == kind for m in MUTATIONS) for kind in ("type", "below", "above", "enum", "item",
                                                                      "unknown")}
    with capsys.disabled():
        print(f"\nconfig fuzzing: {len(MUTATIONS)} wrong configs over {len(every)} schema keys: {counts}")
    # keys inside oneOf alternatives (model.layers entries) are fuzzed as their list's items
    assert untouched <= {k for k in every if ".layers." in k}, sorted(untouched)
    assert len(MUTATIONS) > 3 * len(every) // 2

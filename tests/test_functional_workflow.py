"""The functional stages in the tiny workflow run: alignments, curves, stitching, their tables and
figures exist for every seed pair and agree with each other."""

import json
from itertools import combinations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config

pytestmark = pytest.mark.workflow


def test_functional_outputs_for_every_pair(tiny_run):
    config = tiny_config()
    out = tiny_run / "results" / config["experiment"]
    pairs = list(combinations(sorted(config["seeds"]), 2))
    pairs = pairs[:1] if config["connectivity"]["pairs"] == "first" else pairs
    assert config["stitching"]["pairs"] == config["connectivity"]["pairs"]
    layers = config["model"]["layers"]
    alphas = config["connectivity"]["alphas"]
    for a, b in pairs:
        record = json.loads((out / "functional" / "alignment" / f"{a}-{b}.json").read_text())
        assert set(record["groups"]) == {"features.conv1", "features.conv2", "features.conv3", "features.conv4",
                                         "classifier.fc1"}
        for group in record["groups"].values():
            for key in ("weight", "activation"):
                assert sorted(group[key]) == list(range(group["size"]))
        assert max(record["function_check"].values()) <= 1e-5
        curves = pd.read_csv(out / "functional" / "interpolation" / f"{a}-{b}.csv")
        assert len(curves) == 3 * alphas and set(curves["alignment"]) == {"none", "weight", "activation"}
        start = curves[curves["alpha"] == 0]["loss"].to_numpy()
        np.testing.assert_allclose(start, start[0], rtol=1e-6)  # every line starts at net A
        end = curves[curves["alpha"] == 1]["loss"].to_numpy()
        np.testing.assert_allclose(end, end[0], rtol=1e-4)  # and ends at B's function
        stitched = pd.read_csv(out / "functional" / "stitching" / f"{a}-{b}.csv")
        assert set(zip(stitched["layer"], stitched["stitch"])) == {
            (layer, s) for layer in layers for s in ("trained", "permutation", "sparse")}
        np.testing.assert_allclose(stitched["penalty"], stitched["accuracy_b"] - stitched["accuracy"])
        assert (out / "figures" / f"functional_lmc_{a}-{b}.png").stat().st_size > 5000
    for stem in ("functional_lmc_mean", "functional_stitching"):
        image = matplotlib.image.imread(out / "figures" / f"{stem}.png")
        assert image.ndim == 3 and image.std() > 0
    barriers = pd.read_csv(out / "tables" / "functional_barrier.csv")
    assert set(barriers["pair"]) == {f"{a}-{b}" for a, b in pairs} | {"mean", "std"}
    assert len(barriers) == 3 * (len(pairs) + 2)
    stitching = pd.read_csv(out / "tables" / "functional_stitching.csv")
    assert list(dict.fromkeys(stitching["layer"])) == layers and set(stitching["pairs"]) == {len(pairs)}
    for ext in ("md", "tex"):
        assert (out / "tables" / f"functional_barrier.{ext}").exists()
        assert (out / "tables" / f"functional_stitching.{ext}").exists()

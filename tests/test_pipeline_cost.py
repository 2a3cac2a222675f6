"""benchmarks/pipeline_cost.py's extrapolation arithmetic, on a made-up table of benchmark records
(no run, no model, no timing)."""

import math
import sys

import pandas as pd
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import pipeline_cost as pc  # noqa: E402


def scale(seeds, probe_images, layers, jobs, epochs=1, train_images=1000, macs=1e6):
    cfg = {"dataset": {"probe_images": probe_images}, "train": {"epochs": epochs, "batch_size": 100},
           "mutual_info": {"samples": 60000, "pairs": "first"}}
    return pc.Scale(seeds=seeds, untrained=1, train_images=train_images, heldout_images=probe_images, image_size=32,
                    macs=macs, layers=layers, cfg=cfg, jobs=jobs)


MEASURED = scale(3, 100, [pc.Layer("small", "spatial", 10, 4), pc.Layer("wide", "spatial", 100, 4)],
                 {"correlate": 2, "train": 3, "figure_x": 1})
RECORDS = pd.DataFrame([
    # rule, job, cpu_s, max_rss_mb: start-up 2 s and 100 MB (the figure job, the cheapest)
    ("figure_x", "figure_x", 2.0, 100.0),
    ("correlate", "small", 2.5, 110.0),
    ("correlate", "wide", 12.0, 190.0),      # 10 s and 90 MB above start-up at 400 rows x (3 x 100)^2
    ("train", "seed0", 32.0, 300.0),        # 30 s above start-up at 1,000 images x 1 epoch x 1e6 MACs
    ("train", "seed1", 30.0, 300.0),
    ("train", "seed2", 31.0, 300.0),
], columns=["rule", "job", "cpu_s", "max_rss_mb"])


def test_rates_come_from_the_largest_measured_job_above_the_startup():
    constants, startup, base = pc.rule_constants(RECORDS, MEASURED)
    assert (startup, base) == (2.0, 100.0)
    assert constants.loc["correlate", "cpu_rate"] == pytest.approx(10.0 / (400 * 300 ** 2))
    assert constants.loc["correlate", "mem_bytes"] == 8 * 3 * 300 ** 2 + 8 * 400 * 300
    assert constants.loc["correlate", "mem_at"] == 190
    assert constants.loc["train", "cpu_rate"] == pytest.approx(30.0 / (1000 * 1e6))  # seed0: the first of equals
    assert math.isnan(constants.loc["figure_x", "cpu_rate"])


def test_extrapolation_follows_each_rules_law_per_layer_and_job():
    # 5 seeds, 10x the probe images, 3 epochs on 50x the images, a 200-unit layer and a vector layer
    layers = [pc.Layer("wide", "spatial", 200, 4), pc.Layer("fc", "vector", 100, 1)]
    target = scale(5, 1000, layers, {"correlate": 2, "train": 5, "figure_x": 4, "new_rule": 2, "all": 1,
                                     "total": 14}, epochs=3, train_images=50000)
    target.all_activations = 2 ** 20  # floats of every layer's output per image (the measured run: 0)
    rules = pc.extrapolate(RECORDS, MEASURED, target).set_index("rule")
    assert set(rules.index) == {"correlate", "train", "figure_x", "new_rule"}
    # correlate ~ rows x (S n)^2: wide 4,000 rows x 1,000^2, fc 1,000 rows x 500^2
    rate = 10.0 / (400 * 300 ** 2)
    wide, fc = 2 + rate * 4000 * 1000 ** 2, 2 + rate * 1000 * 500 ** 2
    assert rules.loc["correlate", "cpu_s"] == pytest.approx(wide + fc)
    assert rules.loc["correlate", "largest_job_cpu_s"] == pytest.approx(wide)
    # the measured peak plus the growth of three float64 (S n)^2 matrices and of a float32 chunk, twice
    grown = 8 * 3 * (1000 ** 2 - 300 ** 2) + 8 * (4000 * 1000 - 400 * 300)
    assert rules.loc["correlate", "peak_mb"] == pytest.approx(190 + grown / 2 ** 20)
    # train ~ images x epochs x MACs: 150x the measured work per seed, 5 seeds
    assert rules.loc["train", "cpu_s"] == pytest.approx(5 * (2 + 30.0 * 150))
    # the measured peak plus a batch of 100 images' activations kept for the backward pass (float32)
    assert rules.loc["train", "peak_mb"] == pytest.approx(300.0 + 4 * 100)
    assert bool(rules.loc["train", "gpu"]) and not bool(rules.loc["correlate", "gpu"])
    # no law: each job costs the measured job; a rule the run did not have costs the start-up
    assert rules.loc["figure_x", "cpu_s"] == pytest.approx(4 * 2.0)
    assert rules.loc["new_rule", "cpu_s"] == pytest.approx(2 * 2.0)
    assert rules.loc["new_rule", "peak_mb"] == pytest.approx(100.0)

    groups = pc.by_group(rules.reset_index()).set_index("group")
    assert groups.loc[pc.OTHER_GROUP, "jobs"] == 6
    assert groups.loc[pc.OTHER_GROUP, "cpu_hours"] == pytest.approx((8.0 + 4.0) / 3600)
    assert groups["cpu_s"].sum() == pytest.approx(rules["cpu_s"].sum())
    assert groups.loc[pc.OTHER_GROUP, "measured"] == 0.5  # figure_x measured, new_rule not


def test_a_rule_with_fewer_jobs_than_layers_runs_on_the_middle_layer():
    layers = [pc.Layer(name, "spatial", units, 1) for name, units in (("a", 10), ("b", 20), ("c", 30))]
    target = scale(2, 10, layers, {})
    assert pc._target_layers(target, "subspace_sample_size", 1) == [(layers[1], 1.0)]
    assert pc._target_layers(target, "mutual_info", 6) == [(layer, 2.0) for layer in layers]


def test_profile_resources_round_up_with_headroom_and_the_block_replaces_itself():
    rules = pd.DataFrame([{"rule": "correlate", "peak_mb": 2100.0, "largest_job_cpu_s": 3000.0},
                          {"rule": "subspace", "peak_mb": 900.0, "largest_job_cpu_s": 2.5 * 3600},
                          {"rule": "train", "peak_mb": 100.0, "largest_job_cpu_s": 1e6}])
    resources = pc.profile_resources({"a": rules, "b": rules.assign(peak_mb=rules["peak_mb"] / 2)})
    assert resources == {"correlate": {"mem_mb": 3500, "threads": 1, "runtime": 75},
                         "subspace": {"mem_mb": 1500, "threads": 3, "runtime": 720},
                         "train": {"mem_mb": 1000, "threads": 8, "runtime": 720}}
    block = pc.profile_block(resources, "test", gpu=True, runtime=True, attempt=True)
    text = pc.replace_block("jobs: 4\n", block)
    assert text.startswith("jobs: 4\n\n" + pc.PROFILE_BEGIN) and "    gpu: 1\n" in text
    assert pc.replace_block(text, block) == text
    assert pc.replace_block(text + "after: 1\n", block.replace("3500", "4000")).endswith("after: 1\n")

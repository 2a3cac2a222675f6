"""Shared fixtures: the tiny experiment config, and running Snakemake on it in a private directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
TINY_CONFIG = Path(__file__).with_name("tiny_config.yaml")

if str(SRC) not in sys.path:  # tests run from a checkout, installed or not
    sys.path.insert(0, str(SRC))


class Named(list):
    """Snakemake's named lists in miniature: a list with the entries also reachable by name."""

    def __init__(self, items=(), **named):
        super().__init__([*items, *named.values()])
        self.__dict__.update(named)


def write_conv_activations(path, seed: int, samples, positions, image_index, out_side: int,
                           receptive_field, top_k: int = 4, layer: str = "conv1") -> None:
    """A synthetic activation file for one conv layer, in the contract of convergent.activations,
    for step tests that need known activations rather than a trained network's. The sampled rows
    stand for the whole map, so ``input_mean`` (as the extractor writes it) is each image's mean
    over its rows."""
    import h5py
    import numpy as np

    from convergent.activations import TOP_DTYPE

    units = samples.shape[1]
    top = np.zeros((units, top_k), dtype=TOP_DTYPE)
    for u in range(units):
        order = np.argsort(-samples[:, u])[:top_k]
        top[u]["image"], top[u]["y"], top[u]["x"] = positions[order].T
        top[u]["value"] = samples[order, u]
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"layers": [layer], "seed": seed, "architecture": "small_cnn"})
        h5.create_dataset("probe/image_index", data=image_index)
        group = h5.create_group(f"layers/{layer}")
        group.create_dataset("samples", data=samples.astype(np.float32))
        group.create_dataset("positions", data=positions)
        group.create_dataset("top_activations", data=top)
        group.create_dataset("input_mean", data=image_means(samples, positions[:, 0], len(image_index)))
        group.attrs.update({"kind": "spatial", "signed": bool(samples.min() < 0), "layout": "NCHW",
                            "shape": (units, out_side, out_side), "receptive_field": receptive_field})


#: the `statistics` keys a summary step takes (intervals over few replicates, fast enough for step tests)
STATISTICS = {"replicates": 200, "seed": 0, "level": 0.95, "interval": "percentile", "correct": True}


def image_means(samples, image, n_images: int):
    """float32 ``[n_images, units]``: the mean of each image's rows (``image`` indexes the rows)."""
    import numpy as np

    sums = np.zeros((n_images, samples.shape[1]))
    np.add.at(sums, image, samples)
    return (sums / np.bincount(image, minlength=n_images)[:, None]).astype(np.float32)


def tiny_config() -> dict:
    return yaml.safe_load(TINY_CONFIG.read_text())


def tiny_layers() -> list[str]:
    """The layers the tiny run probes, in network order."""
    return tiny_config()["model"]["layers"]


def write_config(directory: Path, config: dict, name: str = "config.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, check: bool = True,
              timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run the repository's workflow with ``workdir`` as working directory (results, .snakemake)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", *args]
    if configfile is not None:
        command += ["--configfile", str(configfile)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def planned_jobs(workdir: Path, configfile: Path, *args: str) -> dict[str, int]:
    """Rule -> number of jobs a dry run plans (empty when there is nothing to do)."""
    result = snakemake(workdir, "--dry-run", *args, configfile=configfile)
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            jobs[match.group(1)] = int(match.group(2))
    return jobs


def copy_run(source: Path, destination: Path) -> Path:
    """Copy a completed run, keeping modification times so Snakemake sees it as up to date."""
    shutil.copytree(source, destination, copy_function=shutil.copy2, symlinks=True)
    return destination


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One complete run of the tiny experiment, shared (read-only: copy it with ``copy_run``)."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    configfile = write_config(workdir, tiny_config())
    snakemake(workdir, configfile=configfile)
    return workdir


@pytest.hookimpl(tryfirst=True)  # before xdist's worker hook reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (the suite runs with ``-n``), a test goes to the worker that already
    holds what it needs: every test of a module shares the module's fixtures, and every test that
    reads the session-wide tiny run (and the SLURM tests, which compare against it and share one
    cluster) goes to one worker, so the tiny run is made once, not once per worker."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        shares_tiny_run = "tiny_run" in item.fixturenames or module.endswith("test_slurm.py")
        item.add_marker(pytest.mark.xdist_group("tiny_run" if shares_tiny_run else module))

"""The SLURM profile on a real (single-node, throwaway) SLURM cluster (issue #6).

`tests/support/slurm_cluster.py` installs and starts the cluster; these tests first show that it
schedules batch, interactive and GPU jobs, then run the tiny workflow through
`--profile workflow/profiles/slurm` and compare its results with a local run's.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SRC, tiny_config, tiny_layers, write_config
from support.slurm_cluster import SlurmCluster, fit_profile, skip_reason
from support.dry_run import JOB_BLOCK, dry_run, run_snakemake


@pytest.fixture(scope="module")
def cluster():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with SlurmCluster() as c:
        yield c


def test_batch_and_interactive_jobs_run(cluster):
    out = cluster.root / "hostname.out"
    submitted = cluster.run("sbatch", "--wait", "--parsable", f"--output={out}", "--wrap", "hostname")
    job_id = submitted.stdout.strip().split(";")[0]
    assert job_id.isdigit(), submitted.stdout
    assert out.read_text().strip() == cluster.node
    assert cluster.run("srun", "hostname").stdout.strip() == cluster.node
    states = cluster.run("squeue", "--states=all", "--noheader", "--format=%i|%T").stdout
    assert f"{job_id}|COMPLETED" in states.split()


def test_gpu_jobs_get_the_gpu_one_at_a_time(cluster):
    """Two 1-GPU jobs on a 1-GPU node: both get GPU 0, the second only after the first."""
    outs = [cluster.root / f"gpu{i}.out" for i in range(2)]
    script = 'echo "$SLURM_JOB_GPUS $(date +%s.%N)"; sleep 2; date +%s.%N'
    ids = [cluster.run("sbatch", "--parsable", "--gpus=1", f"--output={o}", "--wrap", script)
           .stdout.strip() for o in outs]
    cluster.run("srun", f"--dependency=afterany:{ids[0]}:{ids[1]}", "true", timeout=120)
    spans = []
    for o in outs:
        first, end = o.read_text().split("\n")[:2]
        gpus, start = first.split()
        assert gpus == "0"
        spans.append((float(start), float(end)))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"GPU jobs overlapped: {spans}"


def test_sacct_is_unavailable_so_the_profile_must_use_squeue(cluster):
    """The situation the profile's `slurm-status-command: squeue` is for."""
    result = cluster.run("sacct", "--noheader", check=False)
    assert result.returncode != 0 and "accounting storage is disabled" in result.stderr.lower()


# --- the tiny workflow through workflow/profiles/slurm ------------------------------------------

SUBMITTED = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", re.M)


def _slurm_config(layers: list[str]) -> dict:
    """The tiny experiment cut to two seeds and two layers. Each SLURM job costs two Snakemake
    start-ups (the job's own and its `srun` step's), so the test keeps to a handful of jobs."""
    config = tiny_config()
    config["seeds"] = config["seeds"][:2]
    config["untrained_seeds"] = []
    config.setdefault("model", {})["layers"] = layers
    return config


def _without_timings(metrics):
    """Training metrics less wall times, which differ between any two runs."""
    if isinstance(metrics, dict):
        return {k: _without_timings(v) for k, v in metrics.items() if k != "seconds"}
    if isinstance(metrics, list):
        return [_without_timings(v) for v in metrics]
    return metrics


@pytest.mark.workflow
def test_tiny_workflow_runs_as_slurm_jobs_and_equals_a_local_run(cluster, tiny_run, tmp_path):
    import h5py
    import numpy as np
    import torch

    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail("snakemake-executor-plugin-slurm is not installed (it is in pyproject's `test` extra)")
    local = tiny_run / "results" / "tiny"
    # the first two layers: extraction draws conv positions layer by layer from one RNG
    layers = tiny_layers()[:2]
    config = _slurm_config(layers)
    seeds = config["seeds"]
    configfile = write_config(tmp_path, config)
    # The backbone's outputs: the GPU rules (train, extract), a CPU rule over all seeds
    # (correlate), a figure and a table; the analyses' rules go through the same profile.
    targets = ([f"results/tiny/tables/accuracy.{ext}" for ext in ("csv", "md", "tex")]
               + [f"results/tiny/figures/li2016_fig1_{layer}.png" for layer in layers])
    profile = fit_profile(REPO / "workflow" / "profiles" / "slurm", tmp_path / "profile",
                          cpus=int(cluster.hardware["CPUs"]), mem_mb=2000, rule_threads=True)
    planned = dry_run(tmp_path, *targets, configfile=configfile)
    assert {"train", "extract", "correlate", "figure_li2016_fig1", "table_accuracy"} <= {j.rule for j in planned.values()}

    env = {**cluster.env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(configfile), "--profile", str(profile), *targets]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    text = result.stdout + result.stderr
    assert result.returncode == 0, f"{text[-6000:]}\n{cluster.diagnostics()}"

    # Every planned job was submitted to SLURM, finished there, and left its SLURM log.
    jobs = {}  # Snakemake's job number -> (rule, wildcards)
    for match in JOB_BLOCK.finditer(text):
        fields = dict(re.findall(r"^\s+(\w+): (.*)$", match.group(2), flags=re.M))
        if "jobid" in fields:
            jobs[fields["jobid"]] = (match.group(1), fields.get("wildcards", ""))
    submitted = {m.group(1): (m.group(2), Path(m.group(3))) for m in SUBMITTED.finditer(text)}
    ran_in_slurm = {jobs[n] for n in submitted if n in jobs}
    not_in_slurm = {(j.rule, j.wildcards) for j in planned.values()} - ran_in_slurm
    assert not not_in_slurm, f"jobs that did not run as SLURM jobs: {sorted(not_in_slurm)}"
    states = dict(line.split("|") for line in cluster.run(
        "squeue", "--states=all", "--noheader", "--format=%i|%T").stdout.split())
    for n, (slurm_id, log) in submitted.items():
        assert states.get(slurm_id) == "COMPLETED", f"SLURM job {slurm_id} ({jobs.get(n)}): {states.get(slurm_id)}"
        assert log.is_file() and f"rule {jobs[n][0]}:" in log.read_text(), log

    # GPU rules got the GPU from SLURM (the node's only one, so they ran one at a time).
    for rule in ("train", "extract"):
        ids = [slurm_id for n, (slurm_id, _) in submitted.items() if jobs[n][0] == rule]
        assert ids, rule
        for slurm_id in ids:
            record = cluster.run("scontrol", "show", "job", slurm_id).stdout
            assert re.search(r"gres[/:]gpu[:=]1", record), f"{rule} job {slurm_id}:\n{record}"

    # Same results as the local run of the same networks.
    slurm = tmp_path / "results" / "tiny"
    for seed in seeds:
        ours, theirs = (_without_timings(json.loads((run / "models" / f"seed{seed}.json").read_text()))
                        for run in (slurm, local))
        assert ours == theirs, f"seed {seed}: SLURM {ours} vs local {theirs}"
        a = torch.load(slurm / "models" / f"seed{seed}.pt", weights_only=False)["state_dict"]
        b = torch.load(local / "models" / f"seed{seed}.pt", weights_only=False)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        with h5py.File(slurm / "activations" / f"seed{seed}.h5") as x, \
                h5py.File(local / "activations" / f"seed{seed}.h5") as y:
            for layer in layers:
                np.testing.assert_array_equal(x[f"layers/{layer}/samples"][()], y[f"layers/{layer}/samples"][()])
    for layer in layers:  # the local run correlated three seeds: compare the first two's block
        with h5py.File(slurm / "stats" / f"{layer}.h5") as x, h5py.File(local / "stats" / f"{layer}.h5") as y:
            n = x["corr"].shape[0]
            np.testing.assert_allclose(x["corr"][()], y["corr"][:n, :n], rtol=1e-9, atol=1e-12)


# --- the profiles themselves (no cluster needed) -----------------------------------------------

def test_profiles_size_only_rules_that_exist():
    """A renamed rule would silently lose its GPU, memory and runtime on the cluster."""
    import yaml

    rules = {m.group(1) or m.group(2) for smk in (REPO / "workflow" / "rules").glob("*.smk")
             for m in re.finditer(r"^(?:(?:rule|checkpoint)\s+(\w+)\s*:|use\s+rule\s+\w+\s+as\s+(\w+))",
                                  smk.read_text(), flags=re.M)}
    assert "figure_li2016_fig4" in rules  # made by `use rule figure_li2016_fig2 as figure_li2016_fig4`
    for name in ("slurm", "workstation"):
        profile = yaml.safe_load((REPO / "workflow" / "profiles" / name / "config.yaml").read_text())
        named = set(profile.get("set-resources") or {}) | set(profile.get("set-threads") or {})
        assert named, name
        unknown = named - rules
        assert not unknown, f"profile {name} sizes rules the workflow does not have: {sorted(unknown)}"
        for rule in ("train", "extract"):  # the GPU rules
            assert profile["set-resources"][rule]["gpu"] == 1, (name, rule)
    workstation = yaml.safe_load((REPO / "workflow" / "profiles" / "workstation" / "config.yaml").read_text())
    assert workstation["resources"]["gpu"] == 1, "the workstation runs one GPU job at a time"


@pytest.mark.workflow
def test_workstation_profile_gives_gpu_rules_the_gpu(tmp_path):
    """Snakemake starts a job only while the `gpu` it requests fits the profile's `resources:
    gpu: 1`, so GPU jobs run one at a time; a dry run shows what each job requests."""
    write_config(tmp_path, tiny_config())
    result = run_snakemake(tmp_path, "--dry-run", "--profile", str(REPO / "workflow" / "profiles" / "workstation"))
    gpu = {match.group(1) for match in JOB_BLOCK.finditer(result.stdout + result.stderr)
           if re.search(r"resources:.*\bgpu=1\b", match.group(2))}
    assert {"train", "extract"} <= gpu, gpu

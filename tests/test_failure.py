"""Failure behaviour (issue #6): a job killed mid-way is redone, never trusted; a failing
job's log names the cause; `--keep-going` finishes everything that does not depend on it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SRC, copy_run, tiny_config, write_config
from support.dry_run import dry_run

pytestmark = pytest.mark.workflow

EXCEPTION_LINE = re.compile(r"^\w+(\.\w+)*(Error|Exception)\b.*$", re.M)


def _start(workdir: Path, *args: str) -> subprocess.Popen:
    # targets before --configfile, which takes every word after it
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--cores", "1", *args, "--configfile", str(workdir / "config.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def test_job_killed_midway_is_rerun_not_trusted(tmp_path):
    """SIGKILL Snakemake and its job while `train` runs (no chance to clean up), as a node
    failure or an OOM kill would: the next run must not take the output for complete."""
    write_config(tmp_path, tiny_config())
    target = "results/tiny/models/seed0.pt"
    log = tmp_path / "results" / "tiny" / "logs" / "train" / "seed0.log"
    proc = _start(tmp_path, target)
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and "started" in log.read_text()):
            assert proc.poll() is None, f"snakemake ended before train started:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, "train never started"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = [p.name for p in (tmp_path / "results" / "tiny" / "models").glob("seed0*")]

    # Without --rerun-incomplete Snakemake must refuse or plan the job again, never skip it.
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--cores", "1", "--dry-run", target, "--configfile", str(tmp_path / "config.yaml")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    text = result.stdout + result.stderr
    assert "Nothing to be done" not in text, f"killed job taken as complete (files: {partial})"
    assert result.returncode != 0 and "incomplete" in text.lower() or "rule train:" in text, text[-3000:]
    # The profiles' `rerun-incomplete: true` (and the flag) plan it again.
    jobs = dry_run(tmp_path, "--rerun-incomplete", target)
    assert [j.rule for j in jobs.values()] == ["train"], jobs


def test_failing_job_names_its_cause_and_keep_going_runs_the_rest(tiny_run, tmp_path):
    """Corrupt the statistics of one layer; every Fig. 1 job is forced to run. The job of
    that layer fails with the reason in its log; with --keep-going the other layers finish."""
    run = copy_run(tiny_run, tmp_path / "run")
    out = run / "results" / "tiny"
    layers = sorted(p.stem for p in (out / "stats").glob("*.h5"))
    assert len(layers) >= 2
    broken, fine = layers[0], layers[1:]
    stats = out / "stats" / f"{broken}.h5"
    stamp = stats.stat()
    stats.write_bytes(b"this is not an HDF5 file\n" * 10)
    os.utime(stats, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # nothing else reruns for it
    before = {layer: (out / "figures" / f"li2016_fig1_{layer}.png").stat().st_mtime_ns for layer in fine}

    targets = [f"results/tiny/figures/li2016_fig1_{layer}.png" for layer in layers]
    proc = _start(run, *targets, "--keep-going", "--forcerun", "figure_li2016_fig1")
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0, f"a failed job must fail the run:\n{output[-3000:]}"

    log = (out / "logs" / "figure_li2016_fig1" / f"{broken}.log").read_text()
    assert "Traceback" in log and EXCEPTION_LINE.search(log), f"log names no cause:\n{log[-2000:]}"
    assert f"stats/{broken}.h5" in output or "Error in rule figure_li2016_fig1" in output
    assert str(Path("logs") / "figure_li2016_fig1" / f"{broken}.log") in output, \
        "Snakemake's message does not point to the job's log"
    for layer in fine:
        figure = out / "figures" / f"li2016_fig1_{layer}.png"
        assert figure.stat().st_mtime_ns > before[layer], f"--keep-going did not redo {layer}"
    assert not (out / "figures" / f"li2016_fig1_{broken}.png").exists(), \
        "the failed job's output was left behind"

"""benchmarks/gpu_check.py's plumbing on the CPU (no GPU here): every check runs and compares."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, SRC


def _run(*args):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), *args], capture_output=True,
                          text=True, env=env, timeout=600)


def test_cpu_dry_mode_runs_every_check_within_tolerance():
    result = _run("--device", "cpu", "--quick")
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout.split("-" * 20, 1)[1]
    for check in ("training (bf16 autocast)", "extraction", "float64 statistics", "mutual information",
                  "Algorithm 1", "Algorithm 2", "similarity: linear_cka", "similarity: subspace"):
        assert check in table, result.stdout
    assert "all checks within tolerance" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message given where there is no CUDA")
def test_without_cuda_it_says_so_and_exits_2():
    result = _run()
    assert result.returncode == 2
    assert "CUDA is not available" in result.stderr

"""Snakemake dry runs read back as jobs: what a change would rerun, by rule and wildcards, and why."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOB_BLOCK = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):\n((?:[ \t]+\S.*\n?)*)", re.M)


class Job:
    """One job of a dry run: rule, wildcards, inputs, outputs and Snakemake's reason."""

    def __init__(self, rule: str, body: str):
        self.rule = rule
        fields = dict(re.findall(r"^\s+(\w+): (.*)$", body, flags=re.M))
        self.wildcards = fields.get("wildcards", "")
        self.inputs = [s.strip() for s in fields.get("input", "").split(",") if s.strip()]
        self.outputs = [s.strip() for s in fields.get("output", "").split(",") if s.strip()]
        self.reason = fields.get("reason", "")

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.wildcards

    def wildcard(self, name: str) -> str | None:
        match = re.search(rf"(?:^|, ){name}=([^,]+)", self.wildcards)
        return match.group(1) if match else None

    def __repr__(self) -> str:
        return f"{self.rule}[{self.wildcards}]"


def run_snakemake(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile",
                  configfile: Path | None = None, check: bool = True, timeout: int = 900,
                  cwd: Path | None = None):
    """Snakemake on ``workdir`` (``--directory``), or, with ``cwd=workdir``, run from inside it
    without ``--directory``, as a user in the project directory would."""
    configfile = configfile or workdir / "config.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(snakefile).parent / "src")}
    where = [] if cwd is not None and Path(cwd).resolve() == Path(workdir).resolve() else ["--directory", str(workdir)]
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), *where,
               "--cores", "2", "--configfile", str(configfile), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def dry_run(workdir: Path, *args: str, **kwargs) -> dict[tuple[str, str], Job]:
    """The jobs a dry run plans, by (rule, wildcards); `all` left out."""
    result = run_snakemake(workdir, "--dry-run", *args, **kwargs)
    text = result.stdout + "\n" + result.stderr
    jobs = {}
    for match in JOB_BLOCK.finditer(text):
        job = Job(match.group(1), match.group(2))
        if job.rule != "all":
            jobs[job.key] = job
    if not jobs and "Nothing to be done" not in text:
        raise AssertionError(f"no jobs and no 'Nothing to be done' in the dry run's output:\n{text[-4000:]}")
    return jobs


def describe(keys) -> str:
    return ", ".join(f"{r}[{w}]" for r, w in sorted(keys)) or "nothing"


def assert_same_jobs(actual: dict, expected: dict, what: str) -> None:
    extra, missing = set(actual) - set(expected), set(expected) - set(actual)
    assert not extra and not missing, (
        f"{what}:\n  reruns but should not: {describe(extra)}\n  should rerun but does not: {describe(missing)}")

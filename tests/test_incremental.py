"""Incremental reruns (issue #6): after a complete tiny run, a change reruns exactly what it
touches.

Every expectation is computed from the workflow itself rather than from job counts, so the
tests hold as analyses are added: "the analysis and everything downstream of it" is what a
dry run with `--forcerun <its rules>` plans on the unchanged run, and the change must plan
exactly that set of jobs (identified by rule and wildcards).

(d) needs a library module to edit, which must not be the checkout's own: it runs on a
copy of the workflow sources (mtimes kept). The copy lives at another path, and the rules
declare library modules as inputs by absolute path, so Snakemake's `input` trigger (the
*set* of input paths changed) would rerun everything there; those tests use the other
triggers (mtime, params, code, software-env). An edit is seen through `mtime`: a declared
module newer than a job's outputs reruns the job, exactly as in a checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, copy_run, tiny_config, write_config

pytestmark = pytest.mark.workflow

TRIGGERS_WITHOUT_INPUT = ("--rerun-triggers", "mtime", "params", "code", "software-env")
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
                  configfile: Path | None = None, check: bool = True, timeout: int = 900):
    configfile = configfile or workdir / "config.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(snakefile).parent / "src")}
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir),
               "--cores", "2", "--configfile", str(configfile), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
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
    return jobs


def describe(keys) -> str:
    return ", ".join(f"{r}[{w}]" for r, w in sorted(keys)) or "nothing"


def assert_same_jobs(actual: dict, expected: dict, what: str) -> None:
    extra, missing = set(actual) - set(expected), set(expected) - set(actual)
    assert not extra and not missing, (
        f"{what}:\n  reruns but should not: {describe(extra)}\n  should rerun but does not: {describe(missing)}")


@pytest.fixture(scope="module")
def all_rules(tiny_run) -> dict[str, list[Job]]:
    """Rule -> its jobs in the tiny experiment (a forced dry run of the whole DAG)."""
    rules: dict[str, list[Job]] = {}
    for job in dry_run(tiny_run, "--forceall").values():
        rules.setdefault(job.rule, []).append(job)
    return rules


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    return copy_run(tiny_run, tmp_path / "run")


# --- (a) -------------------------------------------------------------------------------------

def test_complete_run_has_nothing_to_rerun(run):
    jobs = dry_run(run)
    assert not jobs, f"a complete run plans: {describe(jobs)}"


# --- (b) -------------------------------------------------------------------------------------

def _set(config: dict, dotted: str, value) -> None:
    *path, key = dotted.split(".")
    node = config
    for part in path:
        node = node.setdefault(part, {})
    node[key] = value


PARAMETER_EDITS = [
    # (what the issue calls it, config key, new value, the analysis' rules: name or prefix*)
    ("epsilon grid", "subspace.eps", [0.2, 0.5], ["subspace*"]),
    ("MI samples", "mutual_info.samples", 5000, ["mutual_info"]),
    ("tau", "cluster.tau", 0.3, ["cluster"]),
    ("figure format", "figures.formats", ["png", "svg"], ["figure_*"]),
]


def _rules_matching(patterns, rules) -> list[str]:
    return sorted(r for r in rules for p in patterns
                  if (r.startswith(p[:-1]) if p.endswith("*") else r == p))


@pytest.mark.parametrize("name, key, value, patterns", PARAMETER_EDITS, ids=[e[0] for e in PARAMETER_EDITS])
def test_parameter_edit_reruns_exactly_its_analysis(run, all_rules, name, key, value, patterns):
    analysis = _rules_matching(patterns, all_rules)
    if not analysis:
        pytest.skip(f"no rule {patterns} in this workflow yet (its issue is not merged)")
    expected = dry_run(run, "--forcerun", *analysis)
    config = tiny_config()
    _set(config, key, value)
    actual = dry_run(run, configfile=write_config(run, config, "edited.yaml"))
    assert actual, f"editing {key} reruns nothing"
    assert_same_jobs(actual, expected, f"editing {key} ({name})")
    assert not {"train", "extract"} & {j.rule for j in actual.values()}


# --- (c) -------------------------------------------------------------------------------------

def test_new_seed_trains_only_itself_and_reruns_only_what_includes_it(run):
    config = tiny_config()
    new = max(config["seeds"]) + 1
    config["seeds"] = config["seeds"] + [new]
    jobs = dry_run(run, configfile=write_config(run, config, "more_seeds.yaml"))

    def mentions_new(job: Job) -> bool:
        if new in {_int(job.wildcard(w)) for w in ("seed", "a", "b")} or job.wildcard("net") == f"seed{new}":
            return True
        # an aggregate reads the new seed's files: seed{new}.*, pair files {a}-{new}.* / {new}-{b}.*
        pattern = re.compile(rf"(seed{new}\b|\b{new}-\d+\.|\b\d+-{new}\.)")
        return any(pattern.search(path) for path in job.inputs + job.outputs)

    trained = {j.wildcard("seed") for j in jobs.values() if j.rule == "train"}
    extracted = {j.wildcard("net") for j in jobs.values() if j.rule == "extract"}
    assert trained == {str(new)}, f"train reruns for seeds {trained}"
    assert extracted == {f"seed{new}"}, f"extract reruns for {extracted}"
    assert not [j for j in jobs.values() if j.rule in ("untrained", "import_checkpoint")]

    # Jobs of old seeds/pairs may rerun only because an aggregate they read (e.g. the joint
    # correlation statistics of all seeds) now includes the new seed, never for another reason.
    rerun_outputs = {o for j in jobs.values() for o in j.outputs}
    wrong = []
    for job in jobs.values():
        if mentions_new(job):
            continue
        reasons = [r.strip() for r in job.reason.split(";")]
        updated = [r for r in reasons if r.startswith("Input files updated by another job")]
        named = [p.strip() for r in updated for p in r.split(":", 1)[1].split(",")]
        if len(updated) != len(reasons) or not named or not set(named) <= rerun_outputs:
            wrong.append(f"{job} ({job.reason})")
    assert not wrong, "jobs not involving seed %d rerun:\n%s" % (new, "\n".join(wrong))


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- (d) -------------------------------------------------------------------------------------

@pytest.fixture
def relocated(tiny_run, tmp_path) -> tuple[Path, Path]:
    """(workflow sources copy, run copy): the copy's modules may be edited."""
    source = tmp_path / "source"
    source.mkdir()
    for item in ("Snakefile", "config.yaml", "workflow", "src", "envs"):
        path = REPO / item
        if path.is_dir():
            shutil.copytree(path, source / item, copy_function=shutil.copy2,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, source / item)
    return source, copy_run(tiny_run, tmp_path / "run")


def _users_of(module: str, all_rules) -> list[str]:
    path_end = f"src/convergent/{module}"
    return sorted(rule for rule, jobs in all_rules.items()
                  if any(i.endswith(path_end) for j in jobs for i in j.inputs))


def _edit(path: Path) -> None:
    with path.open("a") as handle:
        handle.write("\n# an edit: tests/test_incremental.py\n")


def _single_user_module(all_rules) -> tuple[str, str]:
    """A library module that exactly one rule declares (the issue's case), preferring analyses."""
    users: dict[str, set[str]] = {}
    for rule, jobs in all_rules.items():
        for path in {i for j in jobs for i in j.inputs}:
            match = re.search(r"src/convergent/(\w+\.py)$", path)
            if match:
                users.setdefault(match.group(1), set()).add(rule)
    single = sorted((m, next(iter(r))) for m, r in users.items() if len(r) == 1)
    if not single:
        pytest.skip("every library module is declared by several rules")
    return max(single, key=lambda mr: (mr[1] not in ("train", "extract", "untrained"), mr))


def test_library_module_edit_reruns_the_steps_that_use_it(relocated, all_rules):
    source, run = relocated
    module, rule = _single_user_module(all_rules)
    baseline = dry_run(run, *TRIGGERS_WITHOUT_INPUT, snakefile=source / "Snakefile")
    assert not baseline, f"the relocated copy is not up to date: {describe(baseline)}"
    expected = dry_run(run, *TRIGGERS_WITHOUT_INPUT, "--forcerun", rule, snakefile=source / "Snakefile")
    _edit(source / "src" / "convergent" / module)
    actual = dry_run(run, *TRIGGERS_WITHOUT_INPUT, snakefile=source / "Snakefile")
    assert_same_jobs(actual, expected, f"editing {module} (declared by rule {rule} only)")


def test_shared_module_edit_reruns_every_step_that_declares_it(relocated, all_rules):
    source, run = relocated
    users = _users_of("correlation.py", all_rules)
    assert users, "no rule declares convergent/correlation.py"
    expected = dry_run(run, *TRIGGERS_WITHOUT_INPUT, "--forcerun", *users, snakefile=source / "Snakefile")
    _edit(source / "src" / "convergent" / "correlation.py")
    actual = dry_run(run, *TRIGGERS_WITHOUT_INPUT, snakefile=source / "Snakefile")
    assert_same_jobs(actual, expected, f"editing correlation.py (declared by {users})")


def test_step_script_edit_reruns_its_rule(relocated, all_rules):
    """Snakemake's own code tracking covers the `script:` itself."""
    source, run = relocated
    rule = "correlate"
    expected = dry_run(run, *TRIGGERS_WITHOUT_INPUT, "--forcerun", rule, snakefile=source / "Snakefile")
    _edit(source / "src" / "convergent" / "steps" / f"{rule}.py")
    actual = dry_run(run, *TRIGGERS_WITHOUT_INPUT, snakefile=source / "Snakefile")
    assert_same_jobs(actual, expected, f"editing steps/{rule}.py")

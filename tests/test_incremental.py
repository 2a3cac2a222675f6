"""Incremental reruns (issue #6): after a complete tiny run, a change reruns exactly what it
touches; and a finished project moved to another directory reruns nothing (issue #16).

Every expectation is computed from the workflow itself rather than from job counts, so the
tests hold as analyses are added: "the analysis and everything downstream of it" is what a
dry run with `--forcerun <its rules>` plans on the unchanged run, or the downstream closure of
the jobs in the DAG of a forced dry run, and the change must plan exactly that set of jobs
(identified by rule and wildcards).

Library code (d) is a rerun trigger through each rule's `code` params, a digest of the modules
its step script imports (convergent.step_code). The tests derive the expected users of a module
independently, with the standard library's `modulefinder` on each step script.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from modulefinder import ModuleFinder
from pathlib import Path

import pytest

from conftest import REPO, SRC, copy_run, tiny_config, write_config
from support.dry_run import Job, assert_same_jobs, describe, dry_run

pytestmark = pytest.mark.workflow

@pytest.fixture(scope="module")
def dag(tiny_run) -> dict[tuple[str, str], Job]:
    """Every job of the tiny experiment (a forced dry run of the whole DAG)."""
    return dry_run(tiny_run, "--forceall")


@pytest.fixture(scope="module")
def all_rules(dag) -> dict[str, list[Job]]:
    """Rule -> its jobs in the tiny experiment."""
    rules: dict[str, list[Job]] = {}
    for job in dag.values():
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


# --- (d) library code ------------------------------------------------------------------------

def step_scripts() -> dict[str, Path]:
    """Rule -> its step script, read from the rule files (`use rule a as b` runs a's script)."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    steps = {}
    for block in re.split(r"(?m)^(?=rule |use rule )", text):
        rule = re.match(r"rule (\w+):", block)
        script = re.search(r'script:\s*"[./]*src/convergent/steps/(\w+)\.py"', block)
        if rule and script:
            steps[rule.group(1)] = script.group(1)
    for base, rule in re.findall(r"(?m)^use rule (\w+) as (\w+)", text):
        steps[rule] = steps[base]
    return {rule: SRC / "convergent" / "steps" / f"{step}.py" for rule, step in steps.items()}


def imported_library(script: Path) -> set[str]:
    """The `convergent` modules ``script`` imports, transitively, found by the standard library's
    `modulefinder` (it scans compiled bytecode, function bodies included): an independent
    derivation of what convergent.step_code computes from the syntax tree."""
    finder = ModuleFinder(path=[str(SRC)])
    finder.run_script(str(script))
    return {name for name in finder.modules if name == "convergent" or name.startswith("convergent.")}


def recorded_code(run: Path) -> list[tuple[str, set[str]]]:
    """(rule, modules of its `code` params) of every output, as Snakemake recorded it for the
    params trigger (.snakemake/metadata: one JSON record per output, params as reprs)."""
    records = []
    for path in (run / ".snakemake" / "metadata").rglob("*"):
        if not path.is_file():
            continue
        meta = json.loads(path.read_text())
        codes = []
        for value in meta.get("params", []):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, dict) and "convergent" in value:
                codes.append(set(value))
        assert len(codes) == 1, f"rule {meta.get('rule')}: {len(codes)} `code` params in {meta.get('params')}"
        records.append((meta["rule"], codes[0]))
    return records


def downstream(dag: dict, roots) -> dict:
    """The jobs ``roots`` (keys) and every job that reads, directly or not, what they write."""
    producer = {out: key for key, job in dag.items() for out in job.outputs}
    readers: dict = {}
    for key, job in dag.items():
        for path in job.inputs:
            if path in producer:
                readers.setdefault(producer[path], set()).add(key)
    found, todo = set(roots), list(roots)
    while todo:
        for key in readers.get(todo.pop(), ()):
            if key not in found:
                found.add(key)
                todo.append(key)
    return {key: dag[key] for key in found}


@pytest.fixture
def project(tiny_run, tmp_path) -> Path:
    """The workflow and a finished run of it in one directory at another path, copied as
    `cp -a` copies (timestamps kept): sources beside results/ and .snakemake/, and config.yaml
    the tiny experiment. Its modules may be edited."""
    project = copy_run(tiny_run, tmp_path / "project")
    shutil.copy2(REPO / "Snakefile", project / "Snakefile")
    for item in ("workflow", "src", "envs"):
        shutil.copytree(REPO / item, project / item, copy_function=shutil.copy2,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return project


def _edit(path: Path) -> None:
    with path.open("a") as handle:
        handle.write("\n# an edit: tests/test_incremental.py\n")


@pytest.mark.workflow
def test_each_job_reruns_on_exactly_the_library_modules_its_step_imports(tiny_run, all_rules):
    """What Snakemake recorded as each job's library code is, module for module, what its step
    script imports: so editing any module reruns exactly the jobs whose step imports it."""
    scripts = step_scripts()
    recorded = recorded_code(tiny_run)
    assert {rule for rule, _ in recorded} == set(all_rules) - {"all"}
    wrong = [f"{rule}: recorded {sorted(modules)}, imports {sorted(imported_library(scripts[rule]))}"
             for rule, modules in recorded if modules != imported_library(scripts[rule])]
    assert not wrong, "\n".join(wrong)


@pytest.mark.workflow
@pytest.mark.parametrize("module", ["tables", "device"])
def test_library_module_edit_reruns_the_steps_that_import_it(project, dag, module):
    """`tables` is imported directly by table and figure steps; `device` only through other
    modules (correlation, subspace, mutual_information, ...)."""
    scripts = step_scripts()
    users = {key for key, job in dag.items() if f"convergent.{module}" in imported_library(scripts[job.rule])}
    assert users, f"no step imports convergent.{module}"
    expected = downstream(dag, users)
    _edit(project / "src" / "convergent" / f"{module}.py")
    actual = dry_run(project, snakefile=project / "Snakefile", cwd=project)
    assert_same_jobs(actual, expected, f"editing {module}.py")


@pytest.mark.workflow
def test_step_script_edit_reruns_its_rule(project, dag):
    """Snakemake's own code tracking covers the `script:` itself."""
    expected = downstream(dag, {key for key in dag if key[0] == "correlate"})
    _edit(project / "src" / "convergent" / "steps" / "correlate.py")
    actual = dry_run(project, snakefile=project / "Snakefile", cwd=project)
    assert_same_jobs(actual, expected, "editing steps/correlate.py")


# --- (e) relocation ----------------------------------------------------------------------------

@pytest.mark.workflow
def test_moved_project_plans_nothing(project, tmp_path):
    """Moved or copied with its timestamps, a finished project is still finished: run in its
    directory, and run from elsewhere with --directory (the tiny run itself was made from
    another directory, by a workflow at another path)."""
    inside = dry_run(project, snakefile=project / "Snakefile", cwd=project)
    assert not inside, f"the moved project plans: {describe(inside)}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = dry_run(project, snakefile=project / "Snakefile", cwd=elsewhere)
    assert not outside, f"the moved project, run with --directory, plans: {describe(outside)}"


"""Fault injection over every rule kind (issue 16): jobs SIGKILLed at random moments, then rerun,
end with exactly the outputs of an uninterrupted run, and nothing half-written is ever taken for
finished.

One job of each kind (train, extract, correlate, mutual_info, match, sparse_map, cluster, subspace,
similarity, bootstrap, connectivity, stitch, a figure, a table) is made to run again in a copy of
the session's tiny run by deleting its outputs, and Snakemake is asked for exactly those outputs
(in two phases, see ``PHASES``). While it runs, a seeded RNG kills (SIGKILL: no handler, no cleanup):
- each kind's job (its process tree) once: at a random moment of its expected run time (the
  original job's, from Snakemake's metadata), or, for a random half, as soon as a temporary of its
  outputs appears, that is while it writes;
- Snakemake itself with all its jobs (the whole process group, as a lost node or an OOM killer
  would), once, leaving its lock and incomplete-output markers behind.
A killed job is retried by the same Snakemake (`--retries`, as a profile would set); after a lost
Snakemake the run is restarted as a user would (`snakemake --unlock`, then `--rerun-incomplete`).
The test checks:
- after every interrupted attempt, every output file that exists is complete: equal to the
  uninterrupted run's (partial content only ever lives in hidden temporaries);
- no job Snakemake reported finished is run again;
- in the end every file under results/ equals the uninterrupted run's, byte for byte where the
  format allows (see ``same_content`` for the exceptions and why), no temporary is left, and
  `convergent check` finds nothing.

It costs one run of each kind's cheapest job plus the killed part of each, and four Snakemake
starts (the lost one, the unlock, the rerun; the second phase). Run it alone with ``pytest -m faults``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SRC, copy_run
from support.dry_run import JOB_BLOCK, Job

pytestmark = [pytest.mark.faults, pytest.mark.workflow,
              pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                 reason="finds the jobs' processes in /proc, which only Linux has")]

KINDS = ("train", "extract", "correlate", "mutual_info", "match", "sparse_map", "cluster", "subspace",
         "similarity", "bootstrap", "connectivity", "stitch", "figure", "table")
# Rerunning a job makes every job after it outdated (newer input), so the jobs whose outputs feed
# the others run last: first the analyses, figures and tables, then train -> extract -> correlate
# of one network, each reading only what the jobs before it made. Each phase runs only its own
# jobs (checked from Snakemake's log), so the faults cost no more than the jobs they hit.
PHASES = (tuple(k for k in KINDS if k not in ("train", "extract", "correlate")), ("train", "extract", "correlate"))
SEED = 16  # the number: any fixed seed makes the kill moments reproducible
MAX_ATTEMPTS = 10
MIN_SECONDS = 1.5
TEMPORARY = re.compile(r"^\..+\.tmp\d+(\.\w+)?$|^\..+\.sha256\.tmp\d+$")  # outputs.atomic_output's names
SKIPPED = {"logs", "benchmarks", ".resume"}  # Snakemake's records and the training resume cache
# wall-clock fields measure the machine's load, not the results (convergent.compare skips them too)
TIMING = re.compile(r"seconds|(^|_)time($|_)|elapsed")


def kind_of(rule: str) -> str | None:
    for prefix in ("figure", "table"):
        if rule.startswith(prefix + "_"):
            return prefix
    return rule if rule in KINDS else None


def jobs_of_run(run: Path) -> list[dict]:
    """Every job of a finished run, from Snakemake's metadata: rule, outputs, seconds it took."""
    jobs: dict[int, dict] = {}
    for record in (run / ".snakemake" / "metadata").iterdir():
        meta = json.loads(record.read_text())
        job = jobs.setdefault(meta["job_hash"], {"rule": meta["rule"], "outputs": [], "seconds": 0.0})
        job["outputs"].append(base64.b64decode(record.name).decode())
        job["seconds"] = max(job["seconds"], meta["endtime"] - meta["starttime"])
    return list(jobs.values())


# Rules never chosen for their kind, and why.
NOT_CHOSEN = {
    # reports training time, which differs in every run: with `train` rerun its table could not be
    # compared byte for byte
    "table_accuracy",
    # read `bootstrap_subspace`, which reads the `subspace` results: with the chosen `subspace` job
    # rerun, Snakemake rightly reruns that job in between, which no phase asked for
    "table_wang2018_similarity", "figure_wang2018_fig1",
}


def chosen_jobs(run: Path) -> dict[str, dict]:
    """Each kind's cheapest job, except that `extract` takes the network `train` makes, so that
    the two phases (see ``PHASES``) run nothing but these jobs; the rules in ``NOT_CHOSEN`` are
    left out."""
    chosen: dict[str, dict] = {}
    # a job that ends before the process poll sees it cannot be killed while it runs: cheapest
    # among those that took at least MIN_SECONDS, where a kind has any
    for job in sorted(jobs_of_run(run), key=lambda j: (j["seconds"] < MIN_SECONDS, j["seconds"], j["outputs"])):
        kind = kind_of(job["rule"])
        if kind and kind not in chosen and job["rule"] not in NOT_CHOSEN:
            if kind == "extract":
                continue
            chosen[kind] = job
    missing = set(KINDS) - {"extract"} - set(chosen)
    assert not missing, f"the tiny run has no job of kind {sorted(missing)}: give it one"
    net = Path(next(f for f in chosen["train"]["outputs"] if f.endswith(".pt"))).stem
    chosen["extract"] = next(j for j in jobs_of_run(run) if j["rule"] == "extract"
                             and any(Path(f).stem == net for f in j["outputs"]))
    return chosen


def script_rules() -> dict[str, str]:
    """Step script stem -> rule, from the rule files (a job's process runs `tmpXXXX.<stem>.py`)."""
    stems = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", smk.read_text(), flags=re.M):
            script = re.search(r"script:\s*\n?\s*\"[^\"]*/steps/(\w+)\.py\"", body)
            if script:
                stems[script.group(1)] = rule
    return stems


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process now (this kernel has no /proc/PID/task/TID/children)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return parents


def running_jobs(root: int, stems: dict[str, str]) -> dict[int, tuple[str, list[int]]]:
    """The step scripts running under process ``root``: pid -> (rule, the pids of its process tree).
    A process a step forks keeps its command line, so only the topmost one names the job."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)

    def tree(pid: int) -> list[int]:
        found, i = [pid], 0
        while i < len(found):
            found += children.get(found[i], [])
            i += 1
        return found

    jobs, inside = {}, set()
    for pid in tree(root)[1:]:  # parents before children
        if pid in inside:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        script = next((a.decode() for a in argv if b".snakemake/scripts/tmp" in a), None)
        if script and Path(argv[0].decode()).name.startswith("python"):
            stem = Path(script).name.split(".", 1)[1].removesuffix(".py")
            jobs[pid] = (stems.get(stem, stem), tree(pid))
            inside.update(jobs[pid][1])
    return jobs


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _writing(outputs: list[Path]) -> bool:
    """Whether a temporary of one of ``outputs`` is on disk: the job is writing it."""
    for directory in {o.parent for o in outputs}:
        with contextlib.suppress(OSError):
            names = os.listdir(directory)
            if any(TEMPORARY.match(n) and any(n.startswith(f".{o.name}.tmp") for o in outputs) for n in names):
                return True
    return False


def start_snakemake(run: Path, targets: list[str], log: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(run),
               "--cores", "2", "--configfile", str(run / "config.yaml"), *args, *targets]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    with open(log, "w") as handle:  # a file, not a pipe: nobody reads it while the kills are aimed
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # its own process group, for the group kills


def started_and_finished(log: Path) -> tuple[set[tuple], set[tuple]]:
    """The jobs an attempt started and those it reported finished, each as (rule, outputs)."""
    text = log.read_text()
    by_id = {}
    for match in JOB_BLOCK.finditer(text):
        job = Job(match.group(1), match.group(2))
        jobid = re.search(r"^\s+jobid: (\d+)$", match.group(2), flags=re.M)
        if job.rule != "all" and jobid:
            by_id[jobid.group(1)] = (job.rule, tuple(job.outputs))
    finished = {by_id[i] for i in re.findall(r"Finished jobid: (\d+) ", text) if i in by_id}
    return set(by_id.values()), finished


# -- comparing outputs --------------------------------------------------------------------------

def _same_tree(a, b) -> bool:
    """Nested payloads (JSON, checkpoints) equal, tensors and arrays exactly, timing keys skipped."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {k for k in a.keys() | b.keys() if not TIMING.search(str(k))}
        return all(k in a and k in b and _same_tree(a[k], b[k]) for k in keys)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    if hasattr(a, "detach") and hasattr(b, "detach"):
        a, b = a.detach().cpu().numpy(), b.detach().cpu().numpy()
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and (
            np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    return type(a) is type(b) and (a == b or (a != a and b != b))


def _same_hdf5(a: Path, b: Path) -> bool:
    import h5py

    def items(h5):
        found = {}
        h5.visititems(lambda name, obj: found.__setitem__(name, obj))
        return found

    with h5py.File(a, "r") as ha, h5py.File(b, "r") as hb:
        ia, ib = items(ha), items(hb)
        if ia.keys() != ib.keys() or not _same_tree(dict(ha.attrs), dict(hb.attrs)):
            return False
        for name, obj in ia.items():
            other = ib[name]
            if not _same_tree(dict(obj.attrs), dict(other.attrs)):
                return False
            if isinstance(obj, h5py.Dataset) and not _same_tree(obj[()], other[()]):
                return False
    return True


def same_content(a: Path, b: Path) -> str | None:
    """How ``a`` equals ``b`` ("bytes", or "values" where the format records more than the
    results), or None. Byte-identical is required of everything but: checkpoints (torch.save
    writes a fresh serialization id into every archive) and the models' JSON (training seconds),
    compared as payloads without timing keys; HDF5 files, compared by every dataset and attribute
    in case the library stamps creation times. PNG is byte-identical (matplotlib writes no date);
    this tiny run makes no PDF (it would hold its creation date)."""
    if a.read_bytes() == b.read_bytes():
        return "bytes"
    if a.suffix == ".pt":
        import torch

        same = _same_tree(torch.load(a, weights_only=False), torch.load(b, weights_only=False))
    elif a.suffix == ".json":
        same = _same_tree(json.loads(a.read_text()), json.loads(b.read_text()))
    elif a.suffix == ".h5":
        same = _same_hdf5(a, b)
    else:
        same = False
    return "values" if same else None


def result_files(run: Path) -> dict[str, Path]:
    """Every result file, less Snakemake's logs and benchmarks and the checksum records (a record
    follows its file's bytes, so it is checked against the file, by `convergent check`)."""
    out = run / "results"
    return {str(p.relative_to(run)): p for p in sorted(out.rglob("*"))
            if p.is_file() and not SKIPPED & set(p.relative_to(out).parts[:-1])
            and not (p.name.startswith(".") and p.name.endswith(".sha256"))}


# -- the test ------------------------------------------------------------------------------------

def run_with_faults(run: Path, jobs: dict[str, dict], logs: Path, rng: random.Random, stats: dict,
                    reference: Path, lose_snakemake_once: bool) -> None:
    """Run ``jobs`` (their outputs deleted) to completion through SIGKILLs; see the module docstring."""
    targets = sorted(f for job in jobs.values() for f in job["outputs"])
    for target in targets:
        (run / target).unlink()
    expected = {kind: job["seconds"] for kind, job in jobs.items()}
    chosen = {(job["rule"], tuple(sorted(job["outputs"]))) for job in jobs.values()}
    stems = script_rules()
    killed, finished_before = stats["killed"], set()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        stats["attempts"] += 1
        log = logs / f"attempt{stats['attempts']}.log"
        # --retries: a killed job is rerun by the same Snakemake, as a profile with retries would
        snakemake = start_snakemake(run, targets, log, "--keep-going", "--rerun-incomplete", "--retries", "2")
        lose_snakemake = lose_snakemake_once and attempt == 1
        group_kill_at = None
        aimed: dict[int, tuple[str, float, bool]] = {}  # job pid -> (kind, when it is killed, or once writing)
        while snakemake.poll() is None:
            now = time.monotonic()
            running = running_jobs(snakemake.pid, stems)
            if lose_snakemake and running and group_kill_at is None:
                group_kill_at = now + rng.uniform(0.1, 0.8) * min(expected[kind_of(r)] for r, _ in running.values())
            if group_kill_at is not None and now >= group_kill_at and running:
                os.killpg(snakemake.pid, signal.SIGKILL)
                _kill(p for _, tree in running.values() for p in tree)  # in case one left the group
                snakemake.wait()
                stats["group_kills"] += 1
                killed.update(kind_of(rule) for rule, _ in running.values())
                for rule, _ in running.values():
                    outputs = [run / o for o in jobs[kind_of(rule)]["outputs"]]
                    stats["killed_writing"] += _writing(outputs)
                    stats["temporaries"] |= {t for o in outputs for t in o.parent.glob(f".{o.name}.tmp*")}
                break
            for pid, (rule, _) in running.items():
                kind = kind_of(rule)
                if pid not in aimed and not killed[kind]:
                    # half the kills at a random moment, half as soon as the job writes an output,
                    # or near the end of its expected time if no write has been seen by then (a
                    # job that ends before its kill costs one more Snakemake run to kill it again)
                    on_write = rng.random() < 0.5
                    share = 0.7 if on_write else rng.uniform(0.1, 0.6)
                    aimed[pid] = (kind, now + share * expected[kind], on_write)
            for pid, (kind, when, on_write) in list(aimed.items()):
                if pid not in running or killed[kind]:
                    continue
                outputs = [run / o for o in jobs[kind]["outputs"]]
                writing = _writing(outputs)
                if (on_write and writing) or now >= when:
                    _kill(running[pid][1])
                    killed[kind] += 1
                    stats["killed_writing"] += writing
                    stats["temporaries"] |= {t for o in outputs for t in o.parent.glob(f".{o.name}.tmp*")}
                    for o in outputs:  # at the moment of the kill, anything under a final name is whole
                        with contextlib.suppress(FileNotFoundError):  # Snakemake removes a failed job's outputs
                            assert same_content(o, reference / o.relative_to(run)), f"{o} partial after the kill"
                    del aimed[pid]
            time.sleep(0.03)

        started, finished = started_and_finished(log)
        started = {(rule, tuple(sorted(outputs))) for rule, outputs in started}
        finished = {(rule, tuple(sorted(outputs))) for rule, outputs in finished}
        assert started <= chosen, f"attempt {attempt} ran jobs that were not asked for: {sorted(started - chosen)}"
        stats["redone"] += sorted(started & finished_before)
        finished_before |= finished
        # what a kill leaves: hidden temporaries only; an output under its final name is complete
        for target in targets:
            if (run / target).exists():
                assert same_content(run / target, reference / target), (
                    f"attempt {attempt} left {target} incomplete or different under its final name")
        if snakemake.returncode == 0 and all(killed[kind] for kind in expected):
            return
        if snakemake.returncode == 0:
            # every job of these kinds finished before its kill moment: run them once more, and
            # aim earlier (the reference run's times were taken on a busier machine, say)
            for kind in expected:
                if not killed[kind]:
                    expected[kind] /= 3
                    for output in jobs[kind]["outputs"]:
                        (run / output).unlink()
            finished_before.clear()
        elif group_kill_at is not None:
            # what a user does after losing Snakemake itself: its lock stays behind
            unlock_log = logs / f"unlock{stats['attempts']}.log"
            unlock = start_snakemake(run, targets, unlock_log, "--unlock")
            assert unlock.wait() == 0, unlock_log.read_text()[-3000:]
    raise AssertionError(f"not finished after {MAX_ATTEMPTS} attempts; killed so far {dict(killed)}")


def test_jobs_killed_at_random_moments_rerun_to_the_uninterrupted_results(tiny_run, tmp_path):
    from convergent.verify import verify_results

    began, cpu = time.monotonic(), _children_cpu()
    run = copy_run(tiny_run, tmp_path / "run")
    jobs = chosen_jobs(run)
    rng = random.Random(SEED)
    stats = {"killed": Counter(), "group_kills": 0, "attempts": 0, "redone": [], "temporaries": set(),
             "killed_writing": 0}
    for i, phase in enumerate(PHASES):
        # Snakemake itself is lost in the first phase, where most kinds run at once (one lost
        # Snakemake costs two more Snakemake starts: the unlock and the rerun)
        run_with_faults(run, {kind: jobs[kind] for kind in phase}, tmp_path, rng, stats, tiny_run,
                        lose_snakemake_once=i == 0)

    leftovers = [str(p) for p in (run / "results").rglob("*") if TEMPORARY.match(p.name)]
    assert not leftovers, f"temporaries left after the rerun: {leftovers}"
    problems, checked = verify_results(run / "results" / "tiny")
    assert not problems, "convergent check after the rerun:\n" + "\n".join(map(str, problems))

    ours, theirs = result_files(run), result_files(tiny_run)
    assert ours.keys() == theirs.keys(), (f"files only after the faults: {sorted(ours.keys() - theirs.keys())}; "
                                          f"only in the uninterrupted run: {sorted(theirs.keys() - ours.keys())}")
    how = {name: same_content(ours[name], theirs[name]) for name in ours}
    lost = sorted(name for name, same in how.items() if same is None)
    assert not lost, f"results that differ from the uninterrupted run's: {lost}"
    assert not stats["redone"], f"jobs run again after Snakemake had reported them finished: {stats['redone']}"
    killed = stats["killed"]
    assert all(killed[kind] for kind in KINDS), f"kinds never killed while running: {set(KINDS) - set(killed)}"

    rerun = {name for job in jobs.values() for name in job["outputs"]}
    by_values = Counter(Path(name).suffix for name in rerun if how[name] == "values")
    print(f"\nfault injection: {sum(killed.values())} jobs SIGKILLed while running ({stats['group_kills']} times "
          f"with Snakemake itself), {stats['attempts']} Snakemake runs, {len(jobs)} rule kinds, seed {SEED}")
    print("  jobs killed per kind: " + ", ".join(f"{kind} {killed[kind]}" for kind in KINDS))
    print(f"  kills while the job was writing an output: {stats['killed_writing']}, leaving "
          f"{len(stats['temporaries'])} temporaries (hidden names, removed by the rerun); "
          f"outputs under their final name that were incomplete after a kill: 0; jobs rerun after finishing: 0")
    print(f"  outputs remade: {len(rerun)}, byte-identical to the uninterrupted run {len(rerun) - sum(by_values.values())}, "
          f"equal in every value {dict(by_values)}; all {len(how)} result files compared, "
          f"`convergent check` clean ({checked} files); results lost: 0")
    print(f"  wall time {time.monotonic() - began:.0f} s, CPU time of the Snakemake runs and their jobs "
          f"{_children_cpu() - cpu:.0f} s (on a busy machine the wall time grows, the CPU time does not)")


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

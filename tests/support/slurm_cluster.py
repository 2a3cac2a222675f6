"""A throwaway single-node SLURM cluster for tests (issue #6).

`SlurmCluster` installs Debian's `slurm-wlm` and `munge` when they are missing, writes a
private `slurm.conf` (no accounting storage, one node with this machine's real CPUs and
memory and one fake GPU), starts its own `munged`, `slurmctld` and `slurmd` in the
foreground as children of the test process, waits until the node is idle, and on `stop()`
cancels its jobs and ends exactly those three daemons.

Nothing outside a private temp directory is touched: the daemons get their own ports,
munge socket and key, state and spool directories, so a system SLURM on the same machine
(if any) is neither used nor disturbed. Clients find the cluster through `SLURM_CONF`
(`cluster.env`), which Snakemake's SLURM executor passes on to the jobs (`--export=ALL`).

Why the configuration looks the way it does:
- `ProctrackType=proctrack/linuxproc`, `TaskPlugin=task/none`, `JobAcctGatherType=none`:
  no cgroup setup is needed, so it runs inside containers and CI sandboxes.
- `AccountingStorageType=accounting_storage/none`: no slurmdbd/MySQL. `sacct` then fails
  ("Slurm accounting storage is disabled"), which is why the profile sets
  `slurm-status-command: squeue`; `squeue --states=all` sees finished jobs for `MinJobAge`
  seconds, which must stay >= 3 x `slurm-init-seconds-before-status-checks` or the plugin
  falls back to `sacct`.
- The GPU is a gres `gpu` whose device file is a character device node made with
  `mknod` (a copy of /dev/null): slurmd drops file-less GPUs, but accepts any device node,
  so `--gpus=1` is schedulable and one GPU job at a time runs, exactly as on a one-GPU
  node. The jobs themselves find no CUDA and run on the CPU.

Run by hand (as root):  python tests/support/slurm_cluster.py   (starts, runs a smoke job, stops)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel", "sacct", "salloc")
PARTITION = "main"


def skip_reason() -> str | None:
    """Why this machine cannot host the test cluster, or None if it can.

    Only lacking root is a reason to skip: as root, a missing package is installed
    (`ensure_installed`), and an install that fails is a failure, not a skip.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged and apt-get installing slurm-wlm needs root"
    if shutil.which("apt-get") is None and any(shutil.which(b) is None for b in BINARIES):
        return "slurm-wlm/munge are not installed and there is no apt-get to install them"
    return None


def ensure_installed(timeout: float = 900) -> None:
    """apt-get install slurm-wlm and munge unless their binaries are already there."""
    if all(shutil.which(b) for b in BINARIES):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # A fresh CI machine has no package lists; `install` alone would find nothing.
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
                   env=env, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise RuntimeError(f"apt-get installed {PACKAGES} but {missing} are still not on PATH")


def node_hardware() -> dict[str, str]:
    """The node line fields `slurmd -C` detects (CPUs, sockets, cores, threads, RealMemory)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {k: fields[k] for k in keep if k in fields}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One private SLURM cluster: `with SlurmCluster() as c: subprocess.run(..., env=c.env)`."""

    def __init__(self, root: str | os.PathLike | None = None, gpus: int = 1):
        # munged insists that every directory above its socket is world-searchable,
        # which pytest's 0700 tmp_path is not; hence a directory of our own.
        self._own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="convergent-slurm-"))
        self.root.chmod(0o755)
        self.gpus = gpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        # The SLURM executor's job step (snakemake-executor-plugin-slurm-jobstep 0.6) drops
        # every SLURM_* variable but the job's identity before it calls `srun` inside the
        # job, SLURM_CONF included, and srun then finds no configuration. Wrappers that set
        # it, first on PATH (which jobs inherit), keep the cluster private anyway.
        self.bin = self.root / "bin"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf),
                        PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")
        for var in [v for v in self.env if v.startswith(("SLURM_JOB", "SLURM_STEP", "SBATCH_", "SRUN_"))]:
            del self.env[var]  # a test run inside a SLURM job must not submit into that job
        self.hardware: dict[str, str] = {}

    # -- configuration -----------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log"):
            (r / sub).mkdir(exist_ok=True)
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.hardware = node_hardware()
        hw = " ".join(f"{k}={v}" for k, v in self.hardware.items())
        gres_line = ""
        node_gres = ""
        if self.gpus:
            devices = []
            for i in range(self.gpus):
                dev = r / f"gpu{i}"
                if not dev.exists():
                    try:
                        os.mknod(dev, 0o644 | stat.S_IFCHR, os.makedev(1, 3))
                    except OSError:
                        # Without CAP_MKNOD a regular file still registers (slurmd logs
                        # "not a valid character or block device" and counts it anyway).
                        dev.touch()
                devices.append(str(dev))
            gres_line = "GresTypes=gpu"
            node_gres = f"Gres=gpu:{self.gpus}"
            (r / "gres.conf").write_text(
                "".join(f"NodeName={self.node} Name=gpu File={d}\n" for d in devices))
        self.bin.mkdir(exist_ok=True)
        for client in CLIENTS:
            real = shutil.which(client)
            if real is None:
                continue
            wrapper = self.bin / client
            wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {real} "$@"\n')
            wrapper.chmod(0o755)
        ctld_port, slurmd_port = _free_port(), _free_port()
        self.conf.write_text(f"""\
# Written by tests/support/slurm_cluster.py: a private single-node cluster, no accounting.
ClusterName=convergent-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge.sock
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
# squeue-based status checks see a finished job only this long (see module docstring).
MinJobAge=600
KillWait=5
{gres_line}
NodeName={self.node} NodeAddr=127.0.0.1 {hw} {node_gres} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    # -- lifecycle ---------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stderr", "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        log.close()

    def _wait_for(self, what: str, ok, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode} while waiting for "
                                       f"{what}\n{self.diagnostics()}")
            if ok():
                return
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{self.diagnostics()}")

    def start(self, timeout: float = 90) -> "SlurmCluster":
        ensure_installed()
        self._write_config()
        r = self.root
        self._spawn("munged", ["munged", "--foreground", f"--socket={r}/munge.sock",
                               f"--key-file={r}/munge.key", f"--pid-file={r}/munged.pid",
                               f"--log-file={r}/log/munged.log", f"--seed-file={r}/munged.seed"])
        self._wait_for("munged's socket", lambda: (r / "munge.sock").exists(), timeout)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait_for("slurmctld to answer", lambda: self.run("scontrol", "ping", check=False)
                       .stdout.find("is UP") >= 0, timeout)
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)])
        self._wait_for(f"node {self.node} to be idle", self._node_idle, timeout)
        return self

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "--noheader", "--Node", "--format=%T", check=False).stdout
        return out.strip() == "idle"

    def stop(self, timeout: float = 30, remove: bool = True) -> None:
        """Cancel this cluster's jobs, end the daemons this object started, and remove the
        directory it made (`remove=False` keeps configuration and logs for a look)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self.run("scancel", f"--partition={PARTITION}", check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.run(
                    "squeue", "--noheader", "--states=RUNNING,PENDING,COMPLETING",
                    check=False).stdout.strip():
                time.sleep(0.5)
        # slurmd before slurmctld before munged: each one's shutdown still talks to the next.
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
        if remove and self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        try:
            return subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                                  check=check, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            if check:
                raise
            return subprocess.CompletedProcess(argv, -1, e.stdout or "", e.stderr or "")

    def diagnostics(self, lines: int = 25) -> str:
        """Tails of the daemons' logs, for assertion messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)


def fit_profile(src: str | os.PathLike, dst: str | os.PathLike, cpus: int, mem_mb: int,
                runtime: int = 10, status_check_seconds: int = 2, rule_threads: bool = False) -> Path:
    """Copy the SLURM profile `src` to `dst`, shrunk to fit a small test node.

    Every rule keeps what it asks for (a `gpu`, its own `threads`), but threads are capped
    at the node's CPUs and memory and runtime are set to what a tiny run needs, so a
    paper-sized request (32 GB, 8 CPUs) does not sit PENDING forever on a 2-CPU node.
    `rule_threads=True` drops the profile's `set-threads`, so jobs use the threads their rules
    declare, as a local run does (a different torch thread count may change results in the
    last bits, and the test compares with a local run).
    (Overriding with --set-resources on the command line would not do: it replaces the
    profile's whole `set-resources` mapping, dropping the `gpu` requests under test.)
    """
    import yaml

    src, dst = Path(src), Path(dst)
    profile = yaml.safe_load((src / "config.yaml").read_text())
    defaults = dict(profile.get("default-resources") or {})
    defaults.update(mem_mb=mem_mb, runtime=runtime)
    profile["default-resources"] = defaults
    if rule_threads:
        profile.pop("set-threads", None)
    else:
        profile["set-threads"] = {rule: min(int(n), cpus)
                                  for rule, n in (profile.get("set-threads") or {}).items()}
    fitted = {}
    for rule, res in (profile.get("set-resources") or {}).items():
        res = dict(res)
        if "mem_mb" in res:
            res["mem_mb"] = mem_mb
        if "runtime" in res:
            res["runtime"] = runtime
        fitted[rule] = res
    profile["set-resources"] = fitted
    profile["slurm-init-seconds-before-status-checks"] = status_check_seconds
    profile["latency-wait"] = 5
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dst


if __name__ == "__main__":
    t0 = time.monotonic()
    with SlurmCluster() as cluster:
        print(f"cluster up in {time.monotonic() - t0:.1f}s at {cluster.root}: {cluster.hardware}")
        print(cluster.run("sinfo").stdout)
        print(cluster.run("sbatch", "--wait", "--wrap", "hostname", f"--output={cluster.root}/smoke.out").stdout)
        print("sbatch job printed:", (cluster.root / "smoke.out").read_text())
        print("srun:", cluster.run("srun", "hostname").stdout)
    print(f"done in {time.monotonic() - t0:.1f}s")

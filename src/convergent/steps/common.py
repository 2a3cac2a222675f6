"""What every step script shares: logging to the rule's log file, thread limits, parsing."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from convergent.outputs import remove_stale_temporaries


class _Tee:
    """Write to the log file and to the original stream, so progress bars show in the terminal
    and stay in the log for later."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()

    def isatty(self):
        return False


def run_step(main, snakemake) -> None:
    """Call ``main(inputs, outputs, params, log)`` with stdout/stderr teed into the rule's log.

    A failure's traceback lands in the log file, so the log of a failed job names the cause.
    Temporaries of this job's outputs that a killed attempt left are removed first.
    """
    threads = max(1, int(snakemake.threads))
    # Snakemake sets OMP_NUM_THREADS for shell: rules only; a script: job would run torch and BLAS
    # on every core, and jobs side by side then fight over them (Algorithm 1 on a 64-unit Gram:
    # 1.3 ms per replicate on 1 thread, 20 ms on 2 threads of a busy 2-core machine).
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)  # read by torch when a library module imports it later
    if "torch" in sys.modules:  # imported by the step's library modules; never import it just for this
        sys.modules["torch"].set_num_threads(threads)
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    with contextlib.ExitStack() as stack:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(threads))  # BLAS and OpenMP pools already loaded (numpy)
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(log_path, "w"))
            stack.enter_context(contextlib.redirect_stdout(_Tee(handle, sys.stdout)))
            stack.enter_context(contextlib.redirect_stderr(_Tee(handle, sys.stderr)))
        began = time.perf_counter()
        where = f" as SLURM job {os.environ['SLURM_JOB_ID']}" if "SLURM_JOB_ID" in os.environ else ""
        print(f"[{snakemake.rule}] started {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}{where}",
              file=sys.stderr)
        for path in snakemake.output:
            for stale in remove_stale_temporaries(path):
                print(f"[{snakemake.rule}] removed {stale}, left by a killed job", file=sys.stderr)
        try:
            main(snakemake.input, snakemake.output, snakemake.params, snakemake.log)
        except BaseException:
            traceback.print_exc()
            raise
        print(f"[{snakemake.rule}] done in {time.perf_counter() - began:.1f} s", file=sys.stderr)

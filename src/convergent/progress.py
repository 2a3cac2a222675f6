"""Progress of long work, as ``callable(done, total)`` callbacks.

Library functions that can run for more than a few seconds take ``progress``: None (silent, the
default in library use), True (a tqdm bar on stderr) or any ``callable(done, total)``, called with
non-decreasing ``done`` up to ``total`` as the work goes. Steps pass a :class:`RateLog`, which
prints plain lines (what, how many of how many, a rate and the time left) so that ``tail -f`` on
a job's log, or a SLURM log, always shows where the job is; a tqdm bar's carriage returns would
leave one unreadable line in a log file.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

Progress = Callable[[int, int], None]

__all__ = ["Progress", "RateLog", "progress_callback"]


class RateLog:
    """A ``callable(done, total)`` that prints one line at most every ``every`` seconds (and at
    the end): what is counted, how many of how many, the rate and the time left. Plain lines,
    so ``tail -f`` on a job's log shows where it is. The clock starts at the first call, and the
    rate counts from the ``done`` of that call (a resumed job starts part-way)."""

    def __init__(self, what: str, every: float = 10.0, file=None):
        self.what, self.every, self.file = what, every, file
        self.began: float | None = None
        self.first = 0
        self.last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.began is None:
            self.began, self.first, self.last = now, done, now
            if done < total:
                return
        if done <= self.first and done < total or (done < total and now - self.last < self.every):
            return
        self.last = now
        spent = now - self.began
        rate = (done - self.first) / spent if spent > 0 else float("nan")
        left = (total - done) / rate if rate > 0 else float("nan")
        tail = "done" if done >= total else f"~{left:.0f} s left"
        print(f"{self.what}: {done}/{total}, {rate:.3g}/s, {spent:.0f} s, {tail}",
              file=self.file or sys.stderr, flush=True)


def progress_callback(progress, what: str, unit: str = "run") -> Progress | None:
    """``progress`` as ``callable(done, total)``: None/False (off), True (a tqdm bar on stderr
    named ``what``, counting ``unit``) or a callable, returned as is."""
    if progress is None or progress is False:
        return None
    if progress is True:
        from tqdm.auto import tqdm

        bar = None

        def report(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, initial=done, desc=what, unit=unit, file=sys.stderr)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return report
    if not callable(progress):
        raise TypeError(f"progress is None, True or callable(done, total), got {progress!r}")
    return progress

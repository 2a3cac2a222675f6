"""``convergent compare RUN_A RUN_B``: how two runs' tables and accuracies differ, within
tolerances, and how the environments that made them differ (:mod:`convergent.compare`).
Exit status 1 when anything differs beyond the tolerances."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", type=Path, help="a results directory (results/<experiment>)")
    parser.add_argument("run_b", type=Path, help="the results directory to compare it with")
    parser.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance (default 1e-9)")
    parser.add_argument("--atol", type=float, default=1e-12, help="absolute tolerance (default 1e-12)")


def run(args) -> int:
    from convergent.compare import compare_runs, environment_differences

    for run in (args.run_a, args.run_b):
        if not run.is_dir():
            print(f"{run}: no such directory")
            return 2
    environment = environment_differences(args.run_a, args.run_b)
    print("environments: " + ("; ".join(environment) if environment else "the same"))
    differences, compared = compare_runs(args.run_a, args.run_b, args.rtol, args.atol)
    for difference in differences:
        print(difference)
    print(f"{len(differences)} of {compared} tables and accuracies differ beyond rtol {args.rtol:g}, "
          f"atol {args.atol:g}")
    return 1 if differences else 0

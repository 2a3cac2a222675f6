"""``convergent check [RESULTS]``: an experiment's config, inputs and finished files, checked
without running anything.

The config against the schema; the dataset readable; the configured layers resolvable on the
model; every ``checkpoints`` entry present and fitting the model; then every file under
``results/<experiment>`` (or RESULTS) against its contract, and against the SHA-256 recorded
when it was written (:mod:`convergent.verify`). One line per problem, naming the config key or
the file and what to do; exit status 1 when there are problems, 2 when the config is invalid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="?", type=Path, default=None,
                        help="the experiment's results directory (default: results/<experiment> from the config)")
    parser.add_argument("--configfile", default="config.yaml", type=Path,
                        help="the experiment's config (default: config.yaml in the working directory)")
    parser.add_argument("--schema", type=Path, default=None, help="the config schema (default: the workflow's)")
    parser.add_argument("--no-inputs", action="store_true",
                        help="skip the dataset, model and checkpoint checks (results only)")


def run(args) -> int:
    from convergent.cli.layers import find_schema
    from convergent.config import ConfigError, validate
    from convergent.verify import Problem, verify_inputs, verify_results

    problems: list[Problem] = []
    config = None
    if args.configfile.is_file():
        try:
            config = validate(yaml.safe_load(args.configfile.read_text()) or {}, find_schema(args.schema))
        except ConfigError as error:
            for line in str(error).splitlines()[1:]:
                print(f"{args.configfile}: {line.strip().lstrip('- ')}")
            return 2
    elif args.results is None:
        print(f"{args.configfile}: no such config; give --configfile or a results directory", file=sys.stderr)
        return 2
    if config is not None and not args.no_inputs:
        print(f"checking the inputs of {args.configfile} ...", file=sys.stderr)
        problems += verify_inputs(config)
    results = args.results or Path("results") / config["experiment"]
    checked = 0
    if results.is_dir():
        print(f"checking the files under {results} ...", file=sys.stderr)
        found, checked = verify_results(results)
        problems += found
    elif args.results is not None:
        problems.append(Problem(str(results), "no such directory"))
    for problem in problems:
        print(problem)
    summary = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}; {checked} result files checked"
    print(summary if problems else f"ok: {summary}", file=sys.stderr)
    return 1 if problems else 0

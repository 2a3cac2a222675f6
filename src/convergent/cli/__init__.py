"""``convergent <command>``: the command-line tools installed with the library.

Each command is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int``,
registered in :data:`COMMANDS`; a command's module is imported only when the command runs (and
its heavy imports, torch, only inside ``run``), so ``convergent --help`` answers at once. Add a
command by writing its module and one line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line description)
COMMANDS = {
    "layers": ("convergent.cli.layers", "list every layer of the configured model that can be probed"),
    "check": ("convergent.cli.check", "check the config, its inputs and every finished file, without running"),
    "compare": ("convergent.cli.compare", "how two runs' tables and accuracies differ, within tolerances"),
    "results-readme": ("convergent.cli.results_readme", "write the README's results section from a run's tables"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convergent", description="Do networks trained from different seeds learn the same representations?",
        epilog="The pipeline itself runs with snakemake; these commands help to configure and inspect it.")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if name == chosen:  # only the command that runs is imported
            importlib.import_module(module).add_arguments(sub)
    args = parser.parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)

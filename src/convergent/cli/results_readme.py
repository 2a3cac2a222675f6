"""``convergent results-readme RUN [--readme README.md]``: write the README's results section from a
finished run's tables and recorded environment (:mod:`convergent.readme_results`), between the
``<!-- results:begin -->`` and ``<!-- results:end -->`` markers; ``--print`` writes it to stdout
instead. Exit status 1 when the README had other results (``--check``: and leave it as it was)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a results directory (results/<experiment>) with its tables/")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="the file to update (README.md)")
    parser.add_argument("--print", action="store_true", help="print the section instead of updating the file")
    parser.add_argument("--check", action="store_true",
                        help="only say whether the README's section is what the run gives (for CI)")


def run(args) -> int:
    from convergent.readme_results import BEGIN, END, results_section, update_readme

    if not (args.run / "tables").is_dir():
        print(f"{args.run}: no tables/ here; give a finished run's results/<experiment>")
        return 2
    section = results_section(args.run)
    if args.print:
        print(section, end="")
        return 0
    if args.check:
        text = args.readme.read_text()
        current = text.split(BEGIN, 1)[1].split(END, 1)[0].strip() if BEGIN in text and END in text else None
        same = current == section.strip()
        print(f"{args.readme}: results section {'matches' if same else 'differs from'} {args.run}")
        return 0 if same else 1
    changed = update_readme(args.readme, section)
    print(f"{args.readme}: results section {'rewritten' if changed else 'already up to date'} from {args.run}")
    return 1 if changed else 0

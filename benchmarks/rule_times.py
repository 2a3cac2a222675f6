"""Per-rule cost of a finished run, from the `benchmark:` records Snakemake wrote for every job.

    python benchmarks/rule_times.py results/mnist5k-smallcnn [--sort cpu]

Prints one line per rule: jobs, summed wall time, summed CPU time, the longest job and the
largest peak memory (max RSS), and the totals, with the CPU time as a share of the total. On a
shared machine the wall times stretch with the load; the CPU times say what the work costs
(``mean_load`` in the records is each job's own CPU use over its wall time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def job_records(run: Path) -> pd.DataFrame:
    """One row per job: ``rule``, ``job`` (the record's path under the rule, e.g. ``conv1/0-1``),
    ``wall_s``, ``cpu_s`` (user+sys) and ``max_rss_mb`` from the last line of its record."""
    rows = []
    for tsv in sorted((run / "benchmarks").glob("**/*.tsv")):
        record = pd.read_csv(tsv, sep="\t").iloc[-1]
        parts = tsv.relative_to(run / "benchmarks").with_suffix("").parts  # <rule>/<job>, or <rule> for one job
        rows.append({"rule": parts[0], "job": "/".join(parts[1:]) or parts[0],
                     "wall_s": float(record["s"]), "cpu_s": float(record["cpu_time"]),
                     "max_rss_mb": float(record["max_rss"]) if record["max_rss"] != "-" else float("nan")})
    if not rows:
        raise SystemExit(f"no benchmark records under {run / 'benchmarks'}")
    return pd.DataFrame(rows)


def rule_times(run: Path) -> pd.DataFrame:
    jobs = job_records(run)
    return jobs.groupby("rule").agg(jobs=("job", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"),
                                    longest_s=("wall_s", "max"), max_rss_mb=("max_rss_mb", "max"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the experiment's results folder (results/<experiment>)")
    parser.add_argument("--sort", choices=["cpu", "wall", "jobs"], default="cpu")
    args = parser.parse_args()
    table = rule_times(args.run)
    table = table.sort_values({"cpu": "cpu_s", "wall": "wall_s", "jobs": "jobs"}[args.sort], ascending=False)
    table["cpu_share"] = table["cpu_s"] / table["cpu_s"].sum()
    with pd.option_context("display.width", 200, "display.float_format", "{:.1f}".format):
        print(table.to_string(formatters={"cpu_share": "{:.1%}".format}))
    print(f"total: {int(table['jobs'].sum())} jobs, {table['wall_s'].sum():.0f} s wall summed over jobs, "
          f"{table['cpu_s'].sum():.0f} s CPU")


if __name__ == "__main__":
    main()

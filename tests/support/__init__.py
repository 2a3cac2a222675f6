"""Harnesses the tests drive: a headless browser, a private SLURM cluster, Snakemake dry runs."""

# Statistics over seeds and probe inputs (issue 12): per-layer bootstrap replicates over blocks of
# probe inputs and permutation nulls (rule `bootstrap`), combined by the summary tables into
# multi-bootstrap intervals; the tests table and the seeds-needed table (rule `table_tests`).

TRAINED_NETS = [f"seed{s}" for s in SEEDS]
UNTRAINED_NETS = [f"untrained{u}" for u in UNTRAINED]
TRAINED_NET_PAIRS = [(f"seed{a}", f"seed{b}") for a, b in PAIRS]
BASELINE_NET_PAIRS = [(f"seed{s}", f"untrained{u}") for u in UNTRAINED for s in SEEDS]
# One file per layer; every summary table that reports an interval reads them.
REPLICATES = [f"{OUT}/statistics/{layer}.h5" for layer in LAYERS]
# INTERVAL_KEYS, INTERVAL_SECTION: common.smk (the accuracy table, included first, takes them too)


rule bootstrap:
    output:
        replicates=f"{OUT}/statistics/{{layer}}.h5",
    input:
        acts=[activations(net) for net in TRAINED_NETS + UNTRAINED_NETS],
    params:
        code=code("bootstrap"),
        cfg=section("statistics", keep=("seed", "replicates", "blocks", "max_block_bytes", "permutations",
                                        "permutation_inputs", "interval")),
        layer=lambda wc: wc.layer,
        nets=TRAINED_NETS + UNTRAINED_NETS,
        pairs=TRAINED_NET_PAIRS,
        baseline=BASELINE_NET_PAIRS,
        threads=lambda wc, threads: threads,
    log:
        f"{OUT}/logs/bootstrap/{{layer}}.log",
    benchmark:
        f"{OUT}/benchmarks/bootstrap/{{layer}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/bootstrap.py"


rule table_tests:
    output:
        **table("tests"),
        **{f"seeds_{key}": path for key, path in table("seeds_needed").items()},
    input:
        replicates=REPLICATES,
    params:
        code=code("table_tests"),
        cfg=section("statistics", keep=(*INTERVAL_KEYS, "multiple_comparisons", "layer_differences", "width")),
        layers=LAYERS,
        pairs=TRAINED_NET_PAIRS,
        baseline=BASELINE_NET_PAIRS,
        untrained=UNTRAINED_NETS,
    log:
        f"{OUT}/logs/table_tests.log",
    benchmark:
        f"{OUT}/benchmarks/table_tests.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/table_tests.py"


TARGETS += rules.table_tests.output

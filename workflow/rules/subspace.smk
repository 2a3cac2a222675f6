# Wang et al. 2018: ε-approximate subspace matches. s(ε) per layer for every seed pair and for
# trained-vs-untrained baselines (rule `subspace`), Fig. 1, Fig. 2, the s(ε) table, and the
# sample-size study that tells users how many rows d to sample.

SUBSPACE = config["subspace"]
_SUBSPACE_BASE = {"first": SEEDS[:1], "all": SEEDS, "none": []}[SUBSPACE["baseline"]]
SUBSPACE_PAIRS = [(f"seed{a}", f"seed{b}") for a, b in PAIRS]
SUBSPACE_BASELINE = [(f"seed{a}", f"untrained{u}") for u in UNTRAINED for a in _SUBSPACE_BASE]
SUBSPACE_NETS = [f"seed{s}" for s in SEEDS] + [f"untrained{u}" for u in UNTRAINED if _SUBSPACE_BASE]
SUBSPACE_STUDY_LAYER = SUBSPACE["sample_size_study"]["layer"] or LAYERS[len(LAYERS) // 2]
if SUBSPACE_STUDY_LAYER not in LAYERS:
    raise WorkflowError(f"config key 'subspace.sample_size_study.layer': {SUBSPACE_STUDY_LAYER!r} "
                        f"is not a probed layer; allowed: {LAYERS}")

# Result files: trained seeds appear by number (docs/architecture.md), untrained networks with their prefix.
_SUBSPACE_TAG = {f"seed{s}": str(s) for s in SEEDS} | {f"untrained{u}": f"untrained{u}" for u in UNTRAINED}
_SUBSPACE_FILE = f"{OUT}/subspace/{{layer}}/{{a}}-{{b}}.h5"
SUBSPACE_FILES = {
    (layer, a, b): _SUBSPACE_FILE.format(layer=layer, a=_SUBSPACE_TAG[a], b=_SUBSPACE_TAG[b])
    for layer in [*LAYERS, "{layer}"]
    for a, b in SUBSPACE_PAIRS + SUBSPACE_BASELINE
}

# One job per layer for all pairs (like `match`): each network's activations are read once, and
# a small layer takes milliseconds per pair, so per-pair jobs would mostly start Python.
rule subspace:
    output:
        h5=[SUBSPACE_FILES["{layer}", a, b] for a, b in SUBSPACE_PAIRS + SUBSPACE_BASELINE],
    input:
        acts=[activations(net) for net in SUBSPACE_NETS],
    params:
        code=code("subspace"),
        # the study's and the baseline's keys only pick jobs and pairs: leaving them out spares
        # every layer a rerun when they change
        cfg=section("subspace", drop=("sample_size_study", "baseline", "simple_pairs")),
        layer=lambda wc: wc.layer,
        nets=SUBSPACE_NETS,
        pairs=SUBSPACE_PAIRS + SUBSPACE_BASELINE,
        simple_pairs=SUBSPACE_PAIRS[:1] if SUBSPACE["simple_pairs"] == "first" else SUBSPACE_PAIRS,
        threads=lambda wc, threads: threads,  # processes for the simple-match runs
    log:
        f"{OUT}/logs/subspace/{{layer}}.log",
    benchmark:
        f"{OUT}/benchmarks/subspace/{{layer}}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=4 * 60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/subspace.py"


rule subspace_sample_size:
    output:
        csv=f"{OUT}/subspace/sample_size/{{layer}}/{{a}}-{{b}}.csv",
    input:
        a=activations("seed{a}"),
        b=activations("seed{b}"),
    params:
        code=code("subspace_sample_size"),
        cfg=section("subspace", keep=("eps", "repeats", "sample_seed", "device", "sample_size_study",
                                      "min_rows_per_unit")),
        layer=lambda wc: wc.layer,
        pair=lambda wc: (int(wc.a), int(wc.b)),
    log:
        f"{OUT}/logs/subspace_sample_size/{{layer}}/{{a}}-{{b}}.log",
    benchmark:
        f"{OUT}/benchmarks/subspace_sample_size/{{layer}}/{{a}}-{{b}}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=2 * 60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/subspace_sample_size.py"


# s(eps) over probe inputs (issue 12): the `bootstrap` rule's partition of probe inputs into blocks,
# statistics.subspace_replicates draws, Algorithm 1 on each replicate's Gram matrix of each
# repeat's rows; one job per layer.
SUBSPACE_REPLICATES = ([f"{OUT}/statistics/subspace/{layer}.h5" for layer in LAYERS]
                       if config["statistics"]["subspace_replicates"] else [])
SUBSPACE_INTERVALS = section("statistics", keep=(*INTERVAL_KEYS, "subspace_replicates"))


rule bootstrap_subspace:
    output:
        replicates=f"{OUT}/statistics/subspace/{{layer}}.h5",
    input:
        acts=[activations(net) for net in SUBSPACE_NETS],
        # undersampled layers (the subspace rule's flag) get no replicates over inputs
        results=[SUBSPACE_FILES["{layer}", a, b] for a, b in SUBSPACE_PAIRS + SUBSPACE_BASELINE],
    params:
        code=code("bootstrap_subspace"),
        cfg=section("statistics", keep=("seed", "subspace_replicates", "blocks", "max_block_bytes", "interval")),
        # the `subspace` rule's rows: the replicates' estimate is its s(eps)
        subspace=section("subspace", keep=("eps", "sample_size", "repeats", "sample_seed")),
        layer=lambda wc: wc.layer,
        nets=SUBSPACE_NETS,
        pairs=SUBSPACE_PAIRS,
        baseline=SUBSPACE_BASELINE,
    log:
        f"{OUT}/logs/bootstrap_subspace/{{layer}}.log",
    benchmark:
        f"{OUT}/benchmarks/bootstrap_subspace/{{layer}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/bootstrap_subspace.py"


rule table_wang2018_similarity:
    output:
        **table("wang2018_similarity"),
    input:
        pairs=[SUBSPACE_FILES[layer, a, b] for layer in LAYERS for a, b in SUBSPACE_PAIRS],
        baseline=[SUBSPACE_FILES[layer, a, b] for layer in LAYERS for a, b in SUBSPACE_BASELINE],
        replicates=SUBSPACE_REPLICATES,
    params:
        code=code("table_wang2018_similarity"),
        statistics=SUBSPACE_INTERVALS,
        layers=LAYERS,
    log:
        f"{OUT}/logs/table_wang2018_similarity.log",
    benchmark:
        f"{OUT}/benchmarks/table_wang2018_similarity.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/table_wang2018_similarity.py"


rule figure_wang2018_fig1:
    output:
        figure("wang2018_fig1"),
    input:
        pairs=[SUBSPACE_FILES[layer, a, b] for layer in LAYERS for a, b in SUBSPACE_PAIRS],
        baseline=[SUBSPACE_FILES[layer, a, b] for layer in LAYERS for a, b in SUBSPACE_BASELINE],
        replicates=SUBSPACE_REPLICATES,
    params:
        code=code("figure_wang2018_fig1"),
        statistics=SUBSPACE_INTERVALS,
        layers=LAYERS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_wang2018_fig1.log",
    benchmark:
        f"{OUT}/benchmarks/figure_wang2018_fig1.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_wang2018_fig1.py"


rule figure_wang2018_fig2:
    output:
        figure("wang2018_fig2"),
    input:
        # the layers nearest the input and the output, pairs with simple matches
        pairs=[SUBSPACE_FILES[layer, a, b] for layer in dict.fromkeys([LAYERS[0], LAYERS[-1]])
               for a, b in (SUBSPACE_PAIRS[:1] if SUBSPACE["simple_pairs"] == "first"
                            else SUBSPACE_PAIRS)],
    params:
        code=code("figure_wang2018_fig2"),
        layers=LAYERS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_wang2018_fig2.log",
    benchmark:
        f"{OUT}/benchmarks/figure_wang2018_fig2.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_wang2018_fig2.py"


rule figure_wang2018_sample_size:
    output:
        figure("wang2018_sample_size"),
    input:
        csv=f"{OUT}/subspace/sample_size/{SUBSPACE_STUDY_LAYER}/{FIRST_PAIR[0]}-{FIRST_PAIR[1]}.csv",
    params:
        code=code("figure_wang2018_sample_size"),
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_wang2018_sample_size.log",
    benchmark:
        f"{OUT}/benchmarks/figure_wang2018_sample_size.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_wang2018_sample_size.py"


TARGETS += rules.table_wang2018_similarity.output
TARGETS += rules.figure_wang2018_fig1.output
TARGETS += rules.figure_wang2018_fig2.output
TARGETS += rules.figure_wang2018_sample_size.output

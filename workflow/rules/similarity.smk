# Whole-layer similarity beside the papers' matchings (convergent.similarity): CKA (linear,
# debiased, RBF), CCA, SVCCA, PWCCA, Procrustes, RSA, mean matching correlation and s(ε); for
# every pair of layers, with an untrained network and a permutation null as chance baselines.

SIMILARITY_PAIRS = [f"{OUT}/similarity/{a}-{b}.csv" for a, b in PAIRS]
SIMILARITY_UNTRAINED_PAIRS = [f"{OUT}/similarity/{s}-untrained{u}.csv" for u in UNTRAINED for s in SEEDS]
# The rogue-dimension thresholds shape the report, not the measures: editing them reruns no pair.
ROGUE_KEYS = ("rogue_variance_ratio", "rogue_mean_z")


rule similarity:
    output:
        csv=f"{OUT}/similarity/{{a}}-{{b}}.csv",
    input:
        a=activations("seed{a}"),
        b=activations("seed{b}"),
        # Trained pairs take the covariance-based measures from the streamed statistics.
        stats=[f"{OUT}/stats/{layer}.h5" for layer in LAYERS],
    params:
        code=code("similarity"),
        cfg=section("similarity", drop=ROGUE_KEYS),
        layers=LAYERS,
        kind="trained",
        net_a=lambda wc: f"seed{wc.a}",
        net_b=lambda wc: f"seed{wc.b}",
        seeds=lambda wc: (int(wc.a), int(wc.b)),
    log:
        f"{OUT}/logs/similarity/{{a}}-{{b}}.log",
    benchmark:
        f"{OUT}/benchmarks/similarity/{{a}}-{{b}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/similarity.py"


use rule similarity as similarity_untrained with:
    output:
        csv=f"{OUT}/similarity/{{a}}-untrained{{u}}.csv",
    input:
        a=activations("seed{a}"),
        b=activations("untrained{u}"),
        stats=[],
    params:
        code=code("similarity"),
        cfg=section("similarity", drop=ROGUE_KEYS),
        layers=LAYERS,
        kind="untrained",
        net_a=lambda wc: f"seed{wc.a}",
        net_b=lambda wc: f"untrained{wc.u}",
        seeds=None,
    wildcard_constraints:
        u=one_of(UNTRAINED),
    log:
        f"{OUT}/logs/similarity/{{a}}-untrained{{u}}.log",
    benchmark:
        f"{OUT}/benchmarks/similarity/{{a}}-untrained{{u}}.tsv"


rule table_rogue_dimensions:
    output:
        **table("rogue_dimensions"),
    input:
        stats=[f"{OUT}/stats/{layer}.h5" for layer in LAYERS],
    params:
        code=code("table_rogue_dimensions"),
        cfg=section("similarity", keep=ROGUE_KEYS),
        layers=LAYERS,
    log:
        f"{OUT}/logs/table_rogue_dimensions.log",
    benchmark:
        f"{OUT}/benchmarks/table_rogue_dimensions.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/table_rogue_dimensions.py"


rule figure_similarity_summary:
    output:
        figure("similarity_same_layer"),
        **table("similarity_same_layer"),
    input:
        pairs=SIMILARITY_PAIRS + SIMILARITY_UNTRAINED_PAIRS,
        replicates=REPLICATES,
        rogue=f"{OUT}/tables/rogue_dimensions.csv",
    params:
        code=code("figure_similarity_summary"),
        cfg=section("similarity"),
        statistics=INTERVAL_SECTION,
        layers=LAYERS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_similarity_summary.log",
    benchmark:
        f"{OUT}/benchmarks/figure_similarity_summary.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_similarity_summary.py"


rule figure_similarity_cross_layer:
    output:
        [f for m in config["similarity"]["measures"] for f in figure(f"similarity_cross_layer_{m}")],
        **table("similarity_cross_layer"),
    input:
        pairs=SIMILARITY_PAIRS + SIMILARITY_UNTRAINED_PAIRS,
    params:
        code=code("figure_similarity_cross_layer"),
        statistics=INTERVAL_SECTION,
        cfg=section("similarity"),
        layers=LAYERS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_similarity_cross_layer.log",
    benchmark:
        f"{OUT}/benchmarks/figure_similarity_cross_layer.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_similarity_cross_layer.py"


TARGETS += rules.table_rogue_dimensions.output
TARGETS += rules.figure_similarity_summary.output
TARGETS += rules.figure_similarity_cross_layer.output

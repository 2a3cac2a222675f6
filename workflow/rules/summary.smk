# First outputs: the networks' accuracies, and Li et al. Fig. 1 for every layer.


rule table_accuracy:
    output:
        **table("accuracy"),
    input:
        metrics=[f"{OUT}/models/seed{s}.json" for s in SEEDS]
        + [f"{OUT}/models/untrained{s}.json" for s in UNTRAINED],
    params:
        code=code("table_accuracy"),
        statistics=INTERVAL_SECTION,
    log:
        f"{OUT}/logs/table_accuracy.log",
    benchmark:
        f"{OUT}/benchmarks/table_accuracy.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/table_accuracy.py"


rule figure_li2016_fig1:
    output:
        figure("li2016_fig1_{layer}"),
    input:
        stats=f"{OUT}/stats/{{layer}}.h5",
    params:
        code=code("figure_li2016_fig1"),
        pair=FIRST_PAIR,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_fig1/{{layer}}.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_fig1/{{layer}}.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_li2016_fig1.py"


TARGETS += rules.table_accuracy.output
TARGETS += [f for layer in LAYERS for f in figure(f"li2016_fig1_{layer}")]
TARGETS += [activations(f"untrained{s}") for s in UNTRAINED]

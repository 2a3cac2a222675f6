# Li et al. 2016 §4 (ICLR version for Table 2): many-to-many relations between the units of two
# networks. Sparse one-to-many mappings (rule `sparse_map`, Table 2 and the loss-vs-sparsity
# figures) and spectral clustering of both nets' units (rule `cluster`, Figs. 5, 6, 12, 13, 14,
# the eigenvalue plot and the cluster table).

SPARSE = config["sparse_map"]
CLUSTER = config["cluster"]
SPARSE_PAIRS = PAIRS if SPARSE["pairs"] == "all" else [FIRST_PAIR]
CLUSTER_PAIRS = PAIRS if CLUSTER["pairs"] == "all" else [FIRST_PAIR]
# Keys that only shape the figures: kept out of `cluster`'s params so editing them redraws the
# figures without reclustering.
_CLUSTER_FIGURE_KEYS = ("patches", "fig5_clusters", "fig12_clusters", "fig6_max_leaves", "max_units_shown")

if isinstance(CLUSTER["k"], dict):
    _k_layers = set(CLUSTER["k"])
    if _k_layers != set(LAYERS):
        raise WorkflowError(f"config key 'cluster.k': a mapping must give k for every probed layer {LAYERS}; "
                            f"missing {sorted(set(LAYERS) - _k_layers)}, unknown {sorted(_k_layers - set(LAYERS))}")


# The clustering keys of the `cluster` section, with k resolved per layer.
_CLUSTER_BASE = section("cluster", drop=_CLUSTER_FIGURE_KEYS + ("pairs",))
CLUSTER_PARAMS = {
    layer: {**_CLUSTER_BASE, "k": CLUSTER["k"][layer] if isinstance(CLUSTER["k"], dict) else CLUSTER["k"]}
    for layer in LAYERS
}


rule sparse_map:
    output:
        csv=f"{OUT}/sparse/{{layer}}/{{a}}-{{b}}.csv",
    input:
        a=activations("seed{a}"),
        b=activations("seed{b}"),
    params:
        code=code("sparse_map"),
        cfg=section("sparse_map", drop=("pairs",)),
        layer=lambda wc: wc.layer,
        pair=lambda wc: (int(wc.a), int(wc.b)),
    log:
        f"{OUT}/logs/sparse_map/{{layer}}/{{a}}-{{b}}.log",
    benchmark:
        f"{OUT}/benchmarks/sparse_map/{{layer}}/{{a}}-{{b}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/sparse_map.py"


rule table_li2016_table2:
    output:
        **table("li2016_table2"),
    input:
        csv=pair_files(f"{OUT}/sparse/{{layer}}/{{a}}-{{b}}.csv", SPARSE_PAIRS),
    params:
        code=code("table_li2016_table2"),
        statistics=INTERVAL_SECTION,
        layers=LAYERS,
    log:
        f"{OUT}/logs/table_li2016_table2.log",
    benchmark:
        f"{OUT}/benchmarks/table_li2016_table2.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/table_li2016_table2.py"


# One job draws every layer's figure: each is a few lines from a small CSV.
rule figure_li2016_sparsity:
    output:
        [path for layer in LAYERS for path in figure(f"li2016_sparsity_{layer}")],
    input:
        csv=pair_files(f"{OUT}/sparse/{{layer}}/{{a}}-{{b}}.csv", SPARSE_PAIRS),
    params:
        code=code("figure_li2016_sparsity"),
        layers=LAYERS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_sparsity.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_sparsity.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_li2016_sparsity.py"


rule cluster:
    output:
        json=f"{OUT}/clusters/{{layer}}/{{a}}-{{b}}.json",
    input:
        stats=f"{OUT}/stats/{{layer}}.h5",
    params:
        code=code("cluster"),
        cfg=lambda wc: CLUSTER_PARAMS[wc.layer],
        pair=lambda wc: (int(wc.a), int(wc.b)),
    log:
        f"{OUT}/logs/cluster/{{layer}}/{{a}}-{{b}}.log",
    benchmark:
        f"{OUT}/benchmarks/cluster/{{layer}}/{{a}}-{{b}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/cluster.py"


rule table_li2016_clusters:
    output:
        **table("li2016_clusters"),
    input:
        json=pair_files(f"{OUT}/clusters/{{layer}}/{{a}}-{{b}}.json", CLUSTER_PAIRS),
    params:
        code=code("table_li2016_clusters"),
        statistics=INTERVAL_SECTION,
    log:
        f"{OUT}/logs/table_li2016_clusters.log",
    benchmark:
        f"{OUT}/benchmarks/table_li2016_clusters.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/table_li2016_clusters.py"


_FIRST_CLUSTERS = [f"{OUT}/clusters/{layer}/{FIRST_PAIR[0]}-{FIRST_PAIR[1]}.json" for layer in LAYERS]


# Fig. 13, Fig. 14 and the eigenvalue plot of every layer: one job, as each figure takes a
# fraction of the second it costs to start Python with matplotlib.
rule figure_li2016_clusters:
    output:
        layer_figures("li2016_fig13", "li2016_fig14", "li2016_eigenvalues"),
    input:
        json=_FIRST_CLUSTERS,
        stats=[f"{OUT}/stats/{layer}.h5" for layer in LAYERS],
    params:
        code=code("figure_li2016_clusters"),
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_clusters.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_clusters.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_li2016_clusters.py"


# Figs. 5, 12 and 6 of every layer: one job, so the probe images are loaded once.
rule figure_li2016_cluster_units:
    output:
        layer_figures("li2016_fig5", "li2016_fig12", "li2016_fig6"),
    input:
        json=_FIRST_CLUSTERS,
        act_a=activations(f"seed{FIRST_PAIR[0]}"),
        act_b=activations(f"seed{FIRST_PAIR[1]}"),
    params:
        code=code("figure_li2016_cluster_units"),
        cfg=section("cluster", keep=_CLUSTER_FIGURE_KEYS),
        dataset=section("dataset"),
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_cluster_units.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_cluster_units.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_li2016_cluster_units.py"


TARGETS += rules.table_li2016_table2.output
TARGETS += rules.figure_li2016_sparsity.output
TARGETS += rules.table_li2016_clusters.output
TARGETS += rules.figure_li2016_clusters.output
TARGETS += rules.figure_li2016_cluster_units.output  # for text, units by their tokens in context

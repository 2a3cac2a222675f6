# Li et al. 2016 §3: one-to-one alignment of units by correlation (§3.1) and mutual information
# (§3.2), Table 1 and Figs. 2, 3, 4, 7, 8-11, and the mean-activation figure (abstract, finding 3).

MI_PAIRS = PAIRS if config["mutual_info"]["pairs"] == "all" else [FIRST_PAIR]
FIRST = f"{FIRST_PAIR[0]}-{FIRST_PAIR[1]}"


# One job per layer for all seed pairs: the matching itself takes milliseconds, so per-pair
# jobs would mostly spend their time starting Python.
rule match:
    output:
        csv=[f"{OUT}/matching/{{layer}}/{a}-{b}.csv" for a, b in PAIRS],
    input:
        stats=f"{OUT}/stats/{{layer}}.h5",
    params:
        code=code("match"),
        # The `match` section only tunes figures: the matching itself has no parameters.
        pairs=PAIRS,
    log:
        f"{OUT}/logs/match/{{layer}}.log",
    benchmark:
        f"{OUT}/benchmarks/match/{{layer}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/match.py"


rule mutual_info:
    output:
        mi=f"{OUT}/mi/{{layer}}/{{a}}-{{b}}.npz",
        matching=f"{OUT}/matching_mi/{{layer}}/{{a}}-{{b}}.csv",
    input:
        a=activations("seed{a}"),
        b=activations("seed{b}"),
    params:
        code=code("mutual_info"),
        # `pairs` only selects which jobs exist; leaving it out spares a rerun when it changes.
        cfg=section("mutual_info", drop=("pairs",)),
        layer=lambda wc: wc.layer,
        pair=lambda wc: (int(wc.a), int(wc.b)),
        # torch is imported only for large layers, after run_step has set thread limits.
        threads=lambda wc, threads: threads,
    log:
        f"{OUT}/logs/mutual_info/{{layer}}/{{a}}-{{b}}.log",
    benchmark:
        f"{OUT}/benchmarks/mutual_info/{{layer}}/{{a}}-{{b}}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/mutual_info.py"


rule table_li2016_table1:
    output:
        **table("li2016_table1"),
    input:
        matches=pair_files(f"{OUT}/matching/{{layer}}/{{a}}-{{b}}.csv"),
        replicates=REPLICATES,
    params:
        code=code("table_li2016_table1"),
        statistics=INTERVAL_SECTION,
        layers=LAYERS,
        first=FIRST_PAIR,
    log:
        f"{OUT}/logs/table_li2016_table1.log",
    benchmark:
        f"{OUT}/benchmarks/table_li2016_table1.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/table_li2016_table1.py"


rule table_li2016_mi:
    output:
        **table("li2016_mi_vs_correlation"),
    input:
        corr=[f"{OUT}/matching/{layer}/{a}-{b}.csv" for layer in LAYERS for a, b in MI_PAIRS],
        mi=[f"{OUT}/matching_mi/{layer}/{a}-{b}.csv" for layer in LAYERS for a, b in MI_PAIRS],
    params:
        code=code("table_li2016_mi"),
        statistics=INTERVAL_SECTION,
        cfg=section("match"),
    log:
        f"{OUT}/logs/table_li2016_mi.log",
    benchmark:
        f"{OUT}/benchmarks/table_li2016_mi.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/table_li2016_mi.py"


# Figure rules draw every layer in one job (one figure file per layer and format): the probe
# images and the Python start-up are then paid once, not once per layer.
rule figure_li2016_fig3:
    output:
        [p for layer in LAYERS for p in figure(f"li2016_fig3_{layer}")],
    input:
        matching=[f"{OUT}/matching/{layer}/{FIRST}.csv" for layer in LAYERS],
    params:
        code=code("figure_li2016_fig3"),
        pair=FIRST_PAIR,
        layers=LAYERS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_fig3.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_fig3.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_li2016_fig3.py"


rule figure_li2016_fig2:
    output:
        [p for layer in LAYERS for p in figure(f"li2016_fig2_{layer}")],
        # Probe text: the units' token contexts as a table too (the report shows tables in full).
        **(table("li2016_fig2_tokens") if TEXT else {}),
    input:
        matching=[f"{OUT}/matching/{layer}/{FIRST}.csv" for layer in LAYERS],
        act_a=activations(f"seed{FIRST_PAIR[0]}"),
        act_b=activations(f"seed{FIRST_PAIR[1]}"),
        # For the network's first layer the figure also shows the filter weights.
        models=[f"{OUT}/models/seed{s}.pt" for s in FIRST_PAIR],
        model_files=MODEL_FILES,
    params:
        code=code("figure_li2016_fig2"),
        cfg=section("match"),
        figure="li2016_fig2",
        measure="correlation",
        pair=FIRST_PAIR,
        layers=LAYERS,
        dataset=section("dataset"),
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_fig2.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_fig2.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_li2016_fig2.py"


use rule figure_li2016_fig2 as figure_li2016_fig4 with:
    output:
        [p for layer in LAYERS for p in figure(f"li2016_fig4_{layer}")],
        **(table("li2016_fig4_tokens") if TEXT else {}),
    input:
        matching=[f"{OUT}/matching_mi/{layer}/{FIRST}.csv" for layer in LAYERS],
        act_a=activations(f"seed{FIRST_PAIR[0]}"),
        act_b=activations(f"seed{FIRST_PAIR[1]}"),
        models=[f"{OUT}/models/seed{s}.pt" for s in FIRST_PAIR],
        model_files=MODEL_FILES,
    params:
        code=code("figure_li2016_fig2"),
        cfg=section("match"),
        figure="li2016_fig4",
        measure="mutual information",
        pair=FIRST_PAIR,
        layers=LAYERS,
        dataset=section("dataset"),
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_fig4.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_fig4.tsv"


rule figure_li2016_fig7:
    output:
        [p for layer in LAYERS for p in figure(f"li2016_fig7_{layer}")],
    input:
        matching=[f"{OUT}/matching/{layer}/{FIRST}.csv" for layer in LAYERS],
        act_a=activations(f"seed{FIRST_PAIR[0]}"),
        act_b=activations(f"seed{FIRST_PAIR[1]}"),
    params:
        code=code("figure_li2016_fig7"),
        cfg=section("match"),
        pair=FIRST_PAIR,
        layers=LAYERS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_fig7.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_fig7.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_li2016_fig7.py"


rule figure_li2016_mean_activation:
    output:
        figure("li2016_mean_activation"),
    input:
        stats=[f"{OUT}/stats/{layer}.h5" for layer in LAYERS],
    params:
        code=code("figure_li2016_mean_activation"),
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_li2016_mean_activation.log",
    benchmark:
        f"{OUT}/benchmarks/figure_li2016_mean_activation.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_li2016_mean_activation.py"


TARGETS += rules.table_li2016_table1.output
TARGETS += rules.table_li2016_mi.output
TARGETS += figure("li2016_mean_activation")
TARGETS += [f for n in (2, 3, 4, 7) for layer in LAYERS for f in figure(f"li2016_fig{n}_{layer}")]
if TEXT:
    TARGETS += [f"{OUT}/tables/li2016_fig{n}_tokens.csv" for n in (2, 4)]

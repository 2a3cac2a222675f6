# Functional equivalence beside the papers' measures: permutation alignment of each seed pair
# (Ainsworth et al. 2023 weight matching; activation matching by Li et al.'s bipartite matching),
# linear mode connectivity with batch-norm reset (Jordan et al. 2023), and model stitching
# (Lenc & Vedaldi 2015; Bansal et al. 2021) with a trained layer, the matching's permutation
# and Li et al.'s sparse map. The functional steps read checkpoints and the dataset.

# The permutation groups and the stitching cuts come from the zoo's probe points (convergent.network_graph);
# other model sources get the papers' analyses and the similarity measures, not these stages.
FUNCTIONAL = "architecture" in config["model"]
if not FUNCTIONAL and not TEXT:  # text: common.smk says what is skipped
    from snakemake.logging import logger

    logger.info("connectivity and stitching skipped: they need a zoo architecture (model.architecture); "
                "this model comes from another source")
CONNECTIVITY_PAIRS = PAIRS if config["connectivity"]["pairs"] == "all" else [FIRST_PAIR]
STITCHING_PAIRS = PAIRS if config["stitching"]["pairs"] == "all" else [FIRST_PAIR]
STITCH_LAYERS = [l for l in LAYERS if config["stitching"]["layers"] is None or l in config["stitching"]["layers"]]
_unknown_stitch = sorted(set(config["stitching"]["layers"] or []) - set(LAYERS))
if _unknown_stitch:
    raise WorkflowError(f"config key 'stitching.layers': {_unknown_stitch} are not probed layers {LAYERS}")


rule connectivity:
    output:
        alignment=f"{OUT}/functional/alignment/{{a}}-{{b}}.json",
        curves=f"{OUT}/functional/interpolation/{{a}}-{{b}}.csv",
    input:
        a=f"{OUT}/models/seed{{a}}.pt",
        b=f"{OUT}/models/seed{{b}}.pt",
        model_files=MODEL_FILES,
    params:
        code=code("connectivity"),
        # `pairs` only selects which jobs exist; leaving it out spares a rerun when it changes.
        cfg=section("connectivity", drop=("pairs",)),
        dataset=section("dataset"),
        pair=lambda wc: (int(wc.a), int(wc.b)),
    log:
        f"{OUT}/logs/connectivity/{{a}}-{{b}}.log",
    benchmark:
        f"{OUT}/benchmarks/connectivity/{{a}}-{{b}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=4 * 60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/connectivity.py"


rule stitch:
    output:
        csv=f"{OUT}/functional/stitching/{{a}}-{{b}}.csv",
    input:
        a=f"{OUT}/models/seed{{a}}.pt",
        b=f"{OUT}/models/seed{{b}}.pt",
        # The permutation stitch is the pipeline's own bipartite matching of each layer.
        matching=[f"{OUT}/matching/{layer}/{{a}}-{{b}}.csv" for layer in STITCH_LAYERS],
        model_files=MODEL_FILES,
    params:
        code=code("stitch"),
        cfg=section("stitching", drop=("pairs", "layers")),
        dataset=section("dataset"),
        layers=STITCH_LAYERS,
        pair=lambda wc: (int(wc.a), int(wc.b)),
    log:
        f"{OUT}/logs/stitch/{{a}}-{{b}}.log",
    benchmark:
        f"{OUT}/benchmarks/stitch/{{a}}-{{b}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=4 * 60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/stitch.py"


rule figure_functional_lmc:
    output:
        [p for a, b in CONNECTIVITY_PAIRS for p in figure(f"functional_lmc_{a}-{b}")],
        figure("functional_lmc_mean"),
        **table("functional_barrier"),
    input:
        curves=[f"{OUT}/functional/interpolation/{a}-{b}.csv" for a, b in CONNECTIVITY_PAIRS],
    params:
        code=code("figure_functional_lmc"),
        statistics=INTERVAL_SECTION,
        pairs=CONNECTIVITY_PAIRS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_functional_lmc.log",
    benchmark:
        f"{OUT}/benchmarks/figure_functional_lmc.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_functional_lmc.py"


rule figure_functional_stitching:
    output:
        figure("functional_stitching"),
        **table("functional_stitching"),
    input:
        pairs=[f"{OUT}/functional/stitching/{a}-{b}.csv" for a, b in STITCHING_PAIRS],
    params:
        code=code("figure_functional_stitching"),
        statistics=INTERVAL_SECTION,
        layers=STITCH_LAYERS,
        figures=section("figures"),
    log:
        f"{OUT}/logs/figure_functional_stitching.log",
    benchmark:
        f"{OUT}/benchmarks/figure_functional_stitching.tsv"
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/figure_functional_stitching.py"


if FUNCTIONAL:
    TARGETS += rules.figure_functional_lmc.output
    TARGETS += rules.figure_functional_stitching.output

# Functional equivalence beside the papers' measures: permutation alignment of each seed pair
# (Ainsworth et al. 2023 weight matching; activation matching by Li et al.'s bipartite matching),
# linear mode connectivity with batch-norm reset (Jordan et al. 2023), and model stitching
# (Lenc & Vedaldi 2015; Bansal et al. 2021) with a trained layer, the matching's permutation
# and Li et al.'s sparse map. The functional steps read checkpoints and the dataset.

# Both stages need the model's permutation groups and a clean cut of its graph at each stitched
# layer. For the zoo they are known; for other image models (torchvision, timm, factories) they
# are derived from the fx graph of the model built with random weights when the workflow is read
# (convergent.functional_plan, cached), and where that fails the log names the node and why.
from snakemake.logging import logger

from convergent.architectures import layer_specs as _layer_specs
from convergent.functional_plan import plan_functional

_FUNCTIONAL_PLAN = None if TEXT else plan_functional(config, LAYERS)  # text: common.smk says what is skipped
FUNCTIONAL = _FUNCTIONAL_PLAN is not None and _FUNCTIONAL_PLAN["reason"] is None
if _FUNCTIONAL_PLAN is not None and not FUNCTIONAL:
    logger.info(f"connectivity and stitching skipped: {_FUNCTIONAL_PLAN['reason']}")
CONNECTIVITY_PAIRS = PAIRS if config["connectivity"]["pairs"] == "all" else [FIRST_PAIR]
STITCHING_PAIRS = PAIRS if config["stitching"]["pairs"] == "all" else [FIRST_PAIR]
_unknown_stitch = sorted(set(config["stitching"]["layers"] or []) - set(LAYERS))
if _unknown_stitch:
    raise WorkflowError(f"config key 'stitching.layers': {_unknown_stitch} are not probed layers {LAYERS}")
_cannot_stitch = {l: why for l, why in ((_FUNCTIONAL_PLAN or {}).get("stitch") or {}).items() if why}
STITCH_LAYERS = [l for l in LAYERS if (config["stitching"]["layers"] is None or l in config["stitching"]["layers"])
                 and l not in _cannot_stitch]
if FUNCTIONAL:
    for _layer, _why in _cannot_stitch.items():
        logger.info(f"stitching skipped at layer {_layer}: {_why}")
# The module or FX node each stitched layer names, where it is not the layer's own name.
STITCH_TARGETS = {s.name: s.target for s in (_layer_specs(config["model"]) or [])
                  if s.name in STITCH_LAYERS and s.target != s.name}

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
        targets=STITCH_TARGETS,
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
if FUNCTIONAL and STITCH_LAYERS:
    TARGETS += rules.figure_functional_stitching.output

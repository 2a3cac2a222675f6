# convergent: do networks trained from different seeds learn the same representations?
# Usage: snakemake --cores all [--use-conda] [--configfile workflow/configs/<preset>.yaml]
# Stages live in workflow/rules/; the config schema in workflow/schemas/.

report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/statistics.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/uncertainty.smk"
# Analyses (each appends its targets to TARGETS):
include: "workflow/rules/alignment.smk"
include: "workflow/rules/many_to_many.smk"
include: "workflow/rules/subspace.smk"
include: "workflow/rules/similarity.smk"
include: "workflow/rules/functional.smk"


rule all:
    default_target: True
    input:
        TARGETS,

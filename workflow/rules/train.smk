# Networks: trained here, imported from elsewhere (config `checkpoints`), or left untrained.


rule train:
    output:
        model=f"{OUT}/models/seed{{seed}}.pt",
        metrics=f"{OUT}/models/seed{{seed}}.json",
    input:
        model_files=MODEL_FILES,
    params:
        code=code("train"),
        seed=lambda wc: int(wc.seed),
        train=section("train"),
        dataset=IMAGE_TRAINING_DATASET,
        model=MODEL_SOURCE,
    wildcard_constraints:
        seed=one_of([s for s in SEEDS if s not in CHECKPOINTS]),
    log:
        f"{OUT}/logs/train/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/train/seed{{seed}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=24 * 60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/train.py"


rule import_checkpoint:
    output:
        model=f"{OUT}/models/seed{{seed}}.pt",
        metrics=f"{OUT}/models/seed{{seed}}.json",
    input:
        checkpoint=checkpoint_input,
        model_files=MODEL_FILES,
    params:
        code=code("import_checkpoint"),
        checkpoint=lambda wc: CHECKPOINTS[int(wc.seed)],
        seed=lambda wc: int(wc.seed),
        dataset=TRAINING_DATASET,
        model=MODEL_SOURCE,
    wildcard_constraints:
        seed=one_of(list(CHECKPOINTS)),
    log:
        f"{OUT}/logs/import_checkpoint/seed{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/import_checkpoint/seed{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/import_checkpoint.py"


rule untrained:
    output:
        model=f"{OUT}/models/untrained{{seed}}.pt",
        metrics=f"{OUT}/models/untrained{{seed}}.json",
    input:
        model_files=MODEL_FILES,
    params:
        code=code("untrained"),
        seed=lambda wc: int(wc.seed),
        dataset=TRAINING_DATASET,
        model=MODEL_SOURCE,
    log:
        f"{OUT}/logs/untrained/untrained{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/untrained/untrained{{seed}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/untrained.py"

# Activations of the probe set, one HDF5 file per network (trained seeds and untrained baselines).


rule extract:
    output:
        activations=f"{OUT}/activations/{{net}}.h5",
    input:
        model=f"{OUT}/models/{{net}}.pt",
        model_files=MODEL_FILES,
    params:
        code=code("extract"),
        extract=section("extract"),
        dataset=section("dataset"),
        model=section("model"),
        layers=LAYERS,
    log:
        f"{OUT}/logs/extract/{{net}}.log",
    benchmark:
        f"{OUT}/benchmarks/extract/{{net}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=4 * 60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/extract.py"

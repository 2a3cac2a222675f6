# Activations of the probe set, one HDF5 file per network (trained seeds and untrained baselines).


rule extract:
    output:
        activations=f"{OUT}/activations/{{net}}.h5",
    input:
        model=f"{OUT}/models/{{net}}.pt",
        code=library(*NETWORK_CODE, "activations", "extraction", "receptive_fields"),
        model_files=MODEL_FILES,
    params:
        extract=config["extract"],
        dataset=config["dataset"],
        model=config["model"],
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

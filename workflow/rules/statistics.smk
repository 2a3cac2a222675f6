# Joint correlation statistics of all seeds' units, one file per layer.


rule correlate:
    output:
        stats=f"{OUT}/stats/{{layer}}.h5",
    input:
        activations=[activations(f"seed{s}") for s in SEEDS],
    params:
        code=code("correlate"),
        cfg=section("correlate"),
        seeds=SEEDS,
        layer=lambda wc: wc.layer,
    log:
        f"{OUT}/logs/correlate/{{layer}}.log",
    benchmark:
        f"{OUT}/benchmarks/correlate/{{layer}}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=4 * 60,
    conda:
        "../../envs/convergent.yaml"
    script:
        "../../src/convergent/steps/correlate.py"

# NIfTI case -> body mask, crop/resize, distance maps -> one HDF5 per case; the split.


rule preprocess:
    input:
        f"{RESULTS}/nifti/{{case}}",
    output:
        f"{RESULTS}/h5/{{case}}.h5",
    log:
        f"{RESULTS}/logs/preprocess/{{case}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        settings=settings("dataset", "preprocess"),
    shell:
        "dosediff preprocess --settings {params.settings:q} --input {input:q} --out {output:q} 2> {log:q}"


checkpoint split:
    output:
        f"{RESULTS}/splits.json",
    log:
        f"{RESULTS}/logs/split.log",
    conda:
        ENV
    params:
        settings=settings("dataset", "split"),
        cases=list(CASES),
    shell:
        "dosediff split --settings {params.settings:q} --cases {params.cases:q} --out {output:q} 2> {log:q}"

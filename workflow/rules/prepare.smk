# Source folder (DICOM-RT or OpenKBP) -> NIfTI case folder on the CT grid and, in the same
# process, body mask, crop/resize and distance maps -> one HDF5 per case; then the split.


rule prepare:
    input:
        source_folder,
    output:
        case=directory(f"{RESULTS}/nifti/{{case}}"),
        h5=f"{RESULTS}/h5/{{case}}.h5",
    log:
        f"{RESULTS}/logs/prepare/{{case}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        settings=settings("dataset", "preprocess"),
    shell:
        "dosediff prepare --settings {params.settings:q} --case {wildcards.case:q} --input {input:q} --out {output.case:q} --h5 {output.h5:q} 2> {log:q}"


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

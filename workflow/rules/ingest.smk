# Source folder (DICOM-RT or OpenKBP) -> NIfTI case folder on the CT grid.


rule ingest:
    input:
        source_folder,
    output:
        directory(f"{RESULTS}/nifti/{{case}}"),
    log:
        f"{RESULTS}/logs/ingest/{{case}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        settings=settings("dataset"),
    shell:
        "dosediff ingest --settings {params.settings:q} --case {wildcards.case:q} --input {input:q} --out {output:q} 2> {log:q}"

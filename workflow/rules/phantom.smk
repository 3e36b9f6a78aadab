# Synthetic DICOM-RT patients: the embedded default dataset.


rule phantom:
    output:
        directory(f"{INPUT_DIR}/{{case}}"),
    log:
        f"{RESULTS}/logs/phantom/{{case}}.log",
    conda:
        ENV
    threads: 1
    params:
        settings=settings("phantom"),
        index=lambda wildcards: int(wildcards.case.rsplit("_", 1)[-1]),
    shell:
        "dosediff phantom --settings {params.settings:q} --case {wildcards.case:q} --index {params.index:q} --out {output:q} 2> {log:q}"

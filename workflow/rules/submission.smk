# OpenKBP only: every experiment's predictions as the challenge's pt_N.csv submission files.


rule submission:
    input:
        predictions=lambda wildcards: expand(
            f"{RESULTS}/predictions/{wildcards.experiment}/{{case}}.nii.gz",
            case=split_cases(EVAL_SPLIT),
        ),
        references=lambda wildcards: expand(
            f"{RESULTS}/nifti/{{case}}", case=split_cases(EVAL_SPLIT)
        ),
    output:
        directory(f"{RESULTS}/submission/{{experiment}}"),
    log:
        f"{RESULTS}/logs/submission/{{experiment}}.log",
    conda:
        ENV
    threads: 1
    params:
        cases=lambda wildcards: split_cases(EVAL_SPLIT),
        nifti_dir=f"{RESULTS}/nifti",
        predictions=lambda wildcards: f"{RESULTS}/predictions/{wildcards.experiment}",
    shell:
        "dosediff submission --cases {params.cases:q} --nifti-dir {params.nifti_dir:q} --predictions {params.predictions:q} --out {output:q} 2> {log:q}"

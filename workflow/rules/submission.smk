# OpenKBP only: every experiment's predictions as the challenge's pt_N.csv submission files.


rule submission:
    input:
        predictions=lambda wildcards: expand(
            f"{RESULTS}/predictions/{wildcards.experiment}/{{case}}.nii.gz",
            case=split_cases(EVAL_SPLIT),
        ),
        references=evaluated_cases,
    output:
        directory(f"{RESULTS}/submission/{{experiment}}"),
    log:
        f"{RESULTS}/logs/submission/{{experiment}}.log",
    conda:
        ENV
    threads: 1
    shell:
        "dosediff submission --references {input.references:q} --predictions {input.predictions:q} --out {output:q} 2> {log:q}"

# Metrics per experiment, sampling studies, and the dataset report.


rule evaluate:
    input:
        predictions=lambda wildcards: expand(
            f"{RESULTS}/predictions/{wildcards.experiment}/{{case}}.nii.gz",
            case=split_cases(EVAL_SPLIT),
        ),
        references=evaluated_cases,
    output:
        per_case=report(
            f"{RESULTS}/metrics/{{experiment}}/per_case.csv",
            caption="../report/per_case.rst",
            category="Metrics",
            subcategory="{experiment}",
            labels=lambda wildcards: {
                "model": model_label(wildcards.experiment),
                "table": "per case (CSV, download)",
            },
        ),
        per_case_html=report(
            f"{RESULTS}/metrics/{{experiment}}/per_case.html",
            caption="../report/per_case.rst",
            category="Metrics",
            subcategory="{experiment}",
            labels=lambda wildcards: {
                "model": model_label(wildcards.experiment),
                "table": "per case",
            },
        ),
        summary=f"{RESULTS}/metrics/{{experiment}}/summary.md",
        figures=report(
            directory(f"{RESULTS}/metrics/{{experiment}}/figures"),
            patterns=["{case}_dose.png"],
            caption="../report/case_figures.rst",
            category="Figures",
            subcategory="Cases",
            labels=lambda wildcards: {
                "case": wildcards.case,
                "figure": "dose slices",
                "model": model_label(wildcards.experiment),
            },
        ),
    log:
        f"{RESULTS}/logs/evaluate/{{experiment}}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings=settings("dataset", "preprocess", "evaluate"),
        out=lambda wildcards: f"{RESULTS}/metrics/{wildcards.experiment}",
        label=lambda wildcards: model_label(wildcards.experiment),
    shell:
        "dosediff evaluate --settings {params.settings:q} --experiment {wildcards.experiment:q} --references {input.references:q} --predictions {input.predictions:q} --out {params.out:q} --label {params.label:q} 2> {log:q}"


rule study:
    input:
        predictions=lambda wildcards: expand(
            f"{RESULTS}/predictions/{study(wildcards.kind)[0]}/study/{{variant}}/{{case}}.nii.gz",
            variant=study(wildcards.kind)[1],
            case=split_cases(EVAL_SPLIT),
        ),
        references=evaluated_cases,
    output:
        f"{RESULTS}/metrics/{{kind}}.csv",
    log:
        f"{RESULTS}/logs/study/{{kind}}.log",
    wildcard_constraints:
        kind="steps_study|seed_study",
    conda:
        ENV
    threads: 1
    params:
        settings=settings("dataset", "preprocess", "evaluate"),
        experiment=lambda wildcards: study(wildcards.kind)[0],
    shell:
        "dosediff study --settings {params.settings:q} --experiment {params.experiment:q} --references {input.references:q} --predictions {input.predictions:q} --out {output:q} 2> {log:q}"


rule report:
    input:
        metrics=expand(
            f"{RESULTS}/metrics/{{experiment}}/per_case.csv",
            experiment=EXPERIMENTS + [MEAN_DOSE],
        ),
        steps=[f"{RESULTS}/metrics/steps_study.csv"] if study("steps_study") else [],
        seeds=[f"{RESULTS}/metrics/seed_study.csv"] if study("seed_study") else [],
        predictions=dvh_predictions,
        references=evaluated_cases,
    output:
        report(
            directory(f"{RESULTS}/report"),
            patterns=["{table,[^/]+}.html", "{figure,[^/]+}.png", "dvh/{case}.png"],
            caption="../report/tables.rst",
            category=report_category,
            subcategory=report_subcategory,
            labels=report_labels,
        ),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        ENV
    threads: 1
    params:
        settings=settings("report", "evaluate"),
        steps=lambda wildcards, input: ["--steps", *input.steps] if input.steps else [],
        seeds=lambda wildcards, input: ["--seeds", *input.seeds] if input.seeds else [],
    shell:
        "dosediff report --settings {params.settings:q} --metrics {input.metrics:q} {params.steps:q} {params.seeds:q} --references {input.references:q} --predictions {input.predictions:q} --out {output:q} 2> {log:q}"

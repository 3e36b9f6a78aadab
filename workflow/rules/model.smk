# Training, prediction on the test split, and the trivial mean-dose predictor.


rule train:
    input:
        h5=h5_of(["train", "validation"]),
        splits=f"{RESULTS}/splits.json",
    output:
        weights=f"{RESULTS}/models/{{experiment}}/model.safetensors",
        config=f"{RESULTS}/models/{{experiment}}/config.json",
    log:
        f"{RESULTS}/logs/train/{{experiment}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}.tsv"
    conda:
        ENV
    threads: 8
    resources:
        gpu=1,
        mem_mb=8000,
    params:
        launch=train_launcher,
        threads=threads_per_process,
        settings=experiment_settings,
        out=lambda wildcards: f"{RESULTS}/models/{wildcards.experiment}",
        h5_dir=f"{RESULTS}/h5",
    shell:
        "{params.launch:q} train --settings {params.settings:q} --experiment {wildcards.experiment:q} --h5-dir {params.h5_dir:q} --splits {input.splits:q} --out {params.out:q} --threads {params.threads:q} 2> {log:q}"


rule predict:
    input:
        weights=f"{RESULTS}/models/{{experiment}}/model.safetensors",
        h5=f"{RESULTS}/h5/{{case}}.h5",
        case=f"{RESULTS}/nifti/{{case}}",
    output:
        dose=f"{RESULTS}/predictions/{{experiment}}/{{case}}.nii.gz",
        manifest=f"{RESULTS}/predictions/{{experiment}}/{{case}}.json",
    log:
        f"{RESULTS}/logs/predict/{{experiment}}/{{case}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{experiment}}/{{case}}.tsv"
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS) or "no-experiment",
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
    params:
        model=lambda wildcards: f"{RESULTS}/models/{wildcards.experiment}",
        overrides=[],
    shell:
        "dosediff predict --model {params.model:q} --h5 {input.h5:q} --case-dir {input.case:q} --out {output.dose:q} --threads {threads} {params.overrides:q} 2> {log:q}"


use rule predict as predict_study with:
    output:
        dose=f"{RESULTS}/predictions/{{experiment}}/study/{STUDY_VARIANT}/{{case}}.nii.gz",
        manifest=f"{RESULTS}/predictions/{{experiment}}/study/{STUDY_VARIANT}/{{case}}.json",
    log:
        f"{RESULTS}/logs/predict/{{experiment}}/{STUDY_VARIANT}/{{case}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{experiment}}/{STUDY_VARIANT}/{{case}}.tsv"
    params:
        model=lambda wildcards: f"{RESULTS}/models/{wildcards.experiment}",
        overrides=lambda wildcards: [
            "--steps",
            wildcards.steps,
            "--seed",
            wildcards.seed,
        ],


rule mean_dose:
    input:
        train=h5_of(["train"]),
        h5=f"{RESULTS}/h5/{{case}}.h5",
    output:
        dose=f"{RESULTS}/predictions/{MEAN_DOSE}/{{case}}.nii.gz",
        manifest=f"{RESULTS}/predictions/{MEAN_DOSE}/{{case}}.json",
    log:
        f"{RESULTS}/logs/predict/{MEAN_DOSE}/{{case}}.log",
    conda:
        ENV
    threads: 1
    shell:
        "dosediff mean-dose --train-h5 {input.train:q} --h5 {input.h5:q} --out {output.dose:q} 2> {log:q}"

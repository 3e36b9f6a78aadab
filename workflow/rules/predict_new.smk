# Prediction only: new patients (CT + RTSTRUCT; an RTDOSE is optional) and a model folder
# trained elsewhere -> dose (NIfTI, RTDOSE, uncertainty) and a planner report per patient.
# Every model-side setting (ROIs, preprocessing, normalisation, sampling) comes from the model
# folder's config.json; the config says where the patients are and how their ROIs are named.
PREDICT = config["predict"]
MODEL = Path(PREDICT["model"])
MODEL_FILES = [str(MODEL / "model.safetensors"), str(MODEL / "config.json")]

if SOURCE == "phantom":
    raise ValueError(
        "setting dataset.source: phantom in a prediction-only config; expected dicom or openkbp "
        "(the folders of the new patients). Fix: set dataset.source: dicom and dataset.input_dir."
    )
if not (MODEL / "config.json").is_file():
    raise ValueError(
        f"setting predict.model: {MODEL} has no config.json; expected a model folder written by "
        "`dosediff train` (model.safetensors + config.json). Fix: point predict.model at it, or "
        "train the model first (README, New patients)."
    )
# Bad goals stop the run before any job (the report job checks them in any case), where
# snakemake runs in dosediff's environment (not so with --use-conda from a bare snakemake).
try:
    from dosediff.goals import parse_goals
except ImportError:
    parse_goals = None
if parse_goals is not None and "goals" in PREDICT:
    parse_goals(
        PREDICT["goals"],
        json.loads((MODEL / "config.json").read_text()).get("rois", []),
    )


rule ingest_new:
    input:
        folder=source_folder,
        model=MODEL_FILES,
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
        model=MODEL,
    shell:
        "dosediff ingest --settings {params.settings:q} --model {params.model:q} --case {wildcards.case:q} --input {input.folder:q} --out {output:q} 2> {log:q}"


rule preprocess_new:
    input:
        case=f"{RESULTS}/nifti/{{case}}",
        model=MODEL_FILES,
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
        model=MODEL,
    shell:
        "dosediff preprocess --model {params.model:q} --input {input.case:q} --out {output:q} 2> {log:q}"


rule predict_new:
    input:
        model=MODEL_FILES,
        h5=f"{RESULTS}/h5/{{case}}.h5",
        case=f"{RESULTS}/nifti/{{case}}",
    output:
        dose=f"{RESULTS}/predictions/{{case}}.nii.gz",
        manifest=f"{RESULTS}/predictions/{{case}}.json",
    log:
        f"{RESULTS}/logs/predict/{{case}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{case}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
    params:
        model=MODEL,
        sample=json.dumps(PREDICT.get("sample", {}), sort_keys=True),
    shell:
        "dosediff predict --model {params.model:q} --h5 {input.h5:q} --case-dir {input.case:q} --out {output.dose:q} --sample {params.sample:q} --threads {threads} 2> {log:q}"


rule report_new:
    input:
        model=MODEL_FILES,
        case=f"{RESULTS}/nifti/{{case}}",
        dose=f"{RESULTS}/predictions/{{case}}.nii.gz",
        manifest=f"{RESULTS}/predictions/{{case}}.json",
    output:
        report(
            directory(f"{RESULTS}/report/{{case}}"),
            patterns=["{name}.png"],
            caption="../report/planner.rst",
            category="New patients",
            subcategory="{case}",
        ),
    log:
        f"{RESULTS}/logs/report/{{case}}.log",
    conda:
        ENV
    threads: 1
    params:
        settings=settings("predict"),
        model=MODEL,
    shell:
        "dosediff report-case --settings {params.settings:q} --model {params.model:q} --case-dir {input.case:q} --prediction {input.dose:q} --out {output:q} 2> {log:q}"

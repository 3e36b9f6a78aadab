# Config validation, the case table and helpers shared by the rules.
import json
from pathlib import Path

from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

DATASET = config["dataset"]["name"]
SOURCE = config["dataset"]["source"]
INPUT_DIR = Path(config["dataset"].get("input_dir", f"results/{DATASET}/dicom"))
RESULTS = f"results/{DATASET}"
ENV = "../envs/dosediff.yaml"


wildcard_constraints:
    case=r"[A-Za-z0-9_.\-]+",


def find_cases():
    """Case id -> source folder. Phantom cases are made by the workflow; others are
    the patient folders found under dataset.input_dir (OpenKBP: also inside *-pats/),
    named by dataset.pseudonyms where the folder name is a patient identifier."""
    if SOURCE == "phantom":
        n = int(config.get("phantom", {}).get("n_cases", 10))
        found = {
            f"phantom_{i:03d}": INPUT_DIR / f"phantom_{i:03d}" for i in range(1, n + 1)
        }
    else:
        if not INPUT_DIR.is_dir():
            raise ValueError(
                f"setting dataset.input_dir: folder {INPUT_DIR} not found; expected a folder with one "
                "sub-folder per patient. Fix: point dataset.input_dir at your data (see README)."
            )
        pattern = ["pt_*", "*-pats/pt_*"] if SOURCE == "openkbp" else ["*"]
        pseudonyms = config["dataset"].get("pseudonyms", {})
        found = {}
        for pat in pattern:
            for folder in sorted(INPUT_DIR.glob(pat)):
                if folder.is_dir() and not folder.name.startswith("."):
                    found[pseudonyms.get(folder.name, folder.name)] = folder
    excluded = set(config["dataset"].get("exclude_cases", []))
    return {case: path for case, path in sorted(found.items()) if case not in excluded}


CASES = find_cases()


def settings(*sections):
    """The named config sections as JSON: what a rule hands to `dosediff <stage> --settings`."""
    return json.dumps({name: config.get(name, {}) for name in sections}, sort_keys=True)


def source_folder(wildcards):
    return str(CASES[wildcards.case])


EXPERIMENTS = list(config.get("experiments", {}) or {})
MEAN_DOSE = "mean_dose"  # the trivial predictor every model must beat
REPORT = config.get("report", {}) or {}
EVAL_SPLIT = (config.get("split", {}) or {}).get("evaluate_on", "test")


def experiment_settings(wildcards):
    """Only this experiment's section, so editing one experiment reruns only its jobs."""
    return json.dumps(
        {
            "dataset": config["dataset"],
            "experiments": {
                wildcards.experiment: config["experiments"][wildcards.experiment]
            },
        },
        sort_keys=True,
    )


def split_cases(name):
    """Case ids of one split, known once the split checkpoint has run."""
    with open(checkpoints.split.get().output[0]) as f:
        return json.load(f)[name]


def h5_of(names):
    return lambda wildcards: expand(
        f"{RESULTS}/h5/{{case}}.h5", case=[c for n in names for c in split_cases(n)]
    )


def study(kind):
    """Variants (e.g. steps8_seed0) and experiment of a sampling study, or None when off."""
    cfg = REPORT.get(kind) or {}
    if not cfg.get("experiment"):
        return None
    steps, seeds = cfg.get("steps", [8]), cfg.get("seeds", [0])
    return cfg["experiment"], [f"steps{s}_seed{k}" for s in steps for k in seeds]


def all_targets():
    targets = expand(f"{RESULTS}/h5/{{case}}.h5", case=CASES)
    targets.append(f"{RESULTS}/splits.json")
    if EXPERIMENTS:
        targets.append(f"{RESULTS}/report")
    return targets


# Report entries: names, order, categories and labels (rules/evaluate.smk).
def model_label(experiment):
    return (REPORT.get("labels") or {}).get(experiment, experiment)


def report_tables():
    """Table file names in the report's reading order: the comparison tables first."""
    names = list(REPORT.get("tables") or {}) + ["per_roi", "summary", "steps", "seeds"]
    return {name: i + 1 for i, name in enumerate(names)}


def report_category(wildcards):
    return "Tables" if "table" in wildcards.keys() else "Figures"


def report_subcategory(wildcards):
    if "table" in wildcards.keys():
        return "Results"
    return "Cases" if "case" in wildcards.keys() else "Sampling studies"


def report_labels(wildcards):
    """Table order and name; figure kind, case and model: what the report lists entries by."""
    keys = wildcards.keys()
    if "table" in keys:
        order = report_tables().get(wildcards.table, 99)
        return {"table": f"{order:02d} {wildcards.table}"}
    if "case" in keys:
        return {"case": wildcards.case, "figure": "DVH", "model": "all models"}
    return {
        "figure": {"steps": "DDIM steps", "seeds": "sampling seeds"}.get(
            wildcards.figure, wildcards.figure
        )
    }

# Config validation, the case table and helpers shared by the rules.
import json
import os
from pathlib import Path

from snakemake.utils import validate

from dosediff.config import DatasetConfig, PhantomConfig, ReportConfig, section
from dosediff.data.splits import EVALUATE_KEY
from dosediff.config_check import check_config
from dosediff.names import SAFE_WILDCARD, check_names, check_pseudonyms, is_safe_name
from dosediff.names import variant_name

validate(config, "../schemas/config.schema.yaml")
# Where sections meet (condition vs representations, size vs network, metric ROIs): at the dry run.
check_config(config)

DATASET = config["dataset"]["name"]
SOURCE = config["dataset"]["source"]
INPUT_DIR = Path(section(config, DatasetConfig, "dataset").source_dir)
RESULTS = f"results/{DATASET}"
# new patients with a trained model (predict_new.smk)
PREDICT_ONLY = bool(config.get("predict"))
ENV = "../envs/dosediff.yaml"
# The checkout that the conda env's post-deploy script installs (envs/dosediff.post-deploy.sh).
os.environ.setdefault("DOSEDIFF_SOURCE", str(Path(workflow.basedir).resolve().parent))


wildcard_constraints:
    case=SAFE_WILDCARD,
    experiment=SAFE_WILDCARD,


def find_cases():
    """Case id -> source folder. Phantom cases are made by the workflow; others are
    the patient folders found under dataset.input_dir (OpenKBP: also inside *-pats/),
    named by dataset.pseudonyms where the folder name is a patient identifier."""
    if SOURCE == "phantom":
        n = section(config, PhantomConfig, "phantom").n_cases
        found = {
            f"phantom_{i:03d}": INPUT_DIR / f"phantom_{i:03d}" for i in range(1, n + 1)
        }
    else:
        if not INPUT_DIR.is_dir():
            raise ValueError(
                f"setting dataset.input_dir: folder {INPUT_DIR} not found; expected a folder with one "
                "sub-folder per patient. Fix: point dataset.input_dir at your data (see README)."
            )
        found = source_folders(INPUT_DIR)
    excluded = set(config["dataset"].get("exclude_cases", []))
    unknown = sorted(excluded - set(found))
    if unknown:
        print(
            f"dosediff: setting dataset.exclude_cases: {unknown} name no case; ignored "
            "(write the case id: the pseudonym where the folder has one)"
        )
    return {case: path for case, path in sorted(found.items()) if case not in excluded}


def source_folders(input_dir):
    """Case id -> patient folder; a pseudonymised folder is reached through a link named by
    its pseudonym, so no job command or Snakemake record carries the folder name."""
    pseudonyms = config["dataset"].get("pseudonyms", {}) or {}
    check_pseudonyms(pseudonyms)
    pattern = ["pt_*", "*-pats/pt_*"] if SOURCE == "openkbp" else ["*"]
    found = {}
    for pat in pattern:
        for folder in sorted(input_dir.glob(pat)):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            case = pseudonyms.get(folder.name, folder.name)
            if not is_safe_name(case):  # skipped, so that --keep-going runs the others
                print(
                    f"dosediff: patient folder {case!r} skipped: its name is not a safe case id "
                    "(letters, digits, _ . -). Fix: rename it or map it in dataset.pseudonyms."
                )
                continue
            if case in found:
                raise ValueError(
                    f"setting dataset.pseudonyms: two patient folders give case id {case!r}; "
                    "expected one folder per case. Fix: give each folder its own pseudonym."
                )
            found[case] = link_source(case, folder) if case != folder.name else folder
    return found


def link_source(case, folder):
    link = Path(RESULTS) / "sources" / case
    target = str(folder.resolve())
    if not (link.is_symlink() and os.readlink(link) == target):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{case}.link-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)
    return link


CASES = find_cases()


check_names(CASES, "case id")
check_names(config.get("experiments", {}) or {}, "experiments (experiment name)")


def job_section(name):
    """A config section as jobs get it: the dataset without its pseudonym table (folder names
    may be patient IDs; each job gets only its own case id and folder)."""
    section = config.get(name, {}) or {}
    if name == "dataset":
        section = {
            k: v for k, v in section.items() if k not in ("pseudonyms", "exclude_cases")
        }
    return section


def settings(*sections):
    """The named config sections as JSON: what a rule hands to `dosediff <stage> --settings`."""
    return json.dumps({name: job_section(name) for name in sections}, sort_keys=True)


def source_folder(wildcards):
    return str(CASES[wildcards.case])


EXPERIMENTS = list(config.get("experiments", {}) or {})
MEAN_DOSE = "mean_dose"  # the trivial predictor every model must beat
REPORT = config.get("report", {}) or {}
# `dosediff split` decides which split is evaluated (split.evaluate_on) and names it under
# this key of splits.json.
EVAL_SPLIT = EVALUATE_KEY
# A sampling study's prediction folder, as a pattern of the predict_study rule.
STUDY_VARIANT = variant_name("{steps}", "{seed}")


def experiment_settings(wildcards):
    """Only this experiment's section, so editing one experiment reruns only its jobs."""
    return json.dumps(
        {
            "dataset": job_section("dataset"),
            "experiments": {
                wildcards.experiment: config["experiments"][wildcards.experiment]
            },
        },
        sort_keys=True,
    )


def split_cases(name):
    """Case ids of one split, known once the split checkpoint has run."""
    with open(checkpoints.split.get().output[0]) as f:
        splits = json.load(f)
    return (
        splits[splits.get(EVAL_SPLIT, "test")] if name == EVAL_SPLIT else splits[name]
    )


def evaluated_cases(wildcards):
    """Ingest folders of the evaluated split's cases: the references of its predictions."""
    return expand(f"{RESULTS}/nifti/{{case}}", case=split_cases(EVAL_SPLIT))


def dvh_predictions(wildcards):
    """The predictions of each case's DVH figure, model after model (the report's input)."""
    cfg = section(config, ReportConfig, "report")
    return expand(
        f"{RESULTS}/predictions/{{experiment}}/{{case}}.nii.gz",
        experiment=cfg.dvh_models(EXPERIMENTS + [MEAN_DOSE]),
        case=split_cases(EVAL_SPLIT),
    )


def h5_of(names):
    return lambda wildcards: expand(
        f"{RESULTS}/h5/{{case}}.h5", case=[c for n in names for c in split_cases(n)]
    )


def study(kind):
    """Variants (e.g. steps8_seed0) and experiment of a sampling study, or None when off."""
    cfg = getattr(section(config, ReportConfig, "report"), kind)
    return (cfg.experiment, cfg.variants()) if cfg.experiment else None


def all_targets():
    if PREDICT_ONLY:  # one planner report per new patient (predict_new.smk)
        return expand(f"{RESULTS}/report/{{case}}", case=CASES)
    targets = expand(f"{RESULTS}/h5/{{case}}.h5", case=CASES)
    targets.append(f"{RESULTS}/splits.json")
    if EXPERIMENTS:
        targets.append(f"{RESULTS}/report")
    if EXPERIMENTS and SOURCE == "openkbp":
        submitted = EXPERIMENTS + [MEAN_DOSE]
        targets += expand(f"{RESULTS}/submission/{{experiment}}", experiment=submitted)
    return targets


def train_launcher(wildcards, resources):
    """One process for 0 or 1 GPU; DDP with torchrun on one process per GPU beyond that."""
    gpus = int(resources.get("gpu", 0) or 0)
    if gpus <= 1:
        return ["dosediff"]
    return ["torchrun", "--standalone", "--nproc-per-node", str(gpus), "-m", "dosediff"]


def threads_per_process(wildcards, threads, resources):
    return max(1, threads // max(1, int(resources.get("gpu", 0) or 0)))


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

"""The only argument parser: `dosediff <stage> ...`, one subcommand per workflow rule
(`ingest` and `preprocess`, the two halves of `prepare`, also run on their own).

Each subcommand parses its arguments and calls one typed function. Settings come as the
config's sections in JSON (what the rules pass) or as a YAML config file (by hand).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dosediff.errors import InputError

log = logging.getLogger("dosediff")

SETTINGS_HELP = "config sections as inline JSON (as the workflow passes them) or a YAML config file"


def _settings(args: argparse.Namespace) -> dict:
    from dosediff.config import load_settings

    if args.settings is None:
        raise InputError(f"dosediff {args.command}: no --settings; expected the config sections as JSON or a YAML "
                         "file. Fix: pass --settings (or --model for a new patient)")
    return load_settings(args.settings)


def cmd_phantom(args: argparse.Namespace) -> None:
    from dosediff.config import PhantomConfig, section
    from dosediff.phantom import write_phantom_case

    cfg = section(_settings(args), PhantomConfig, "phantom")
    write_phantom_case(Path(args.out), args.case, args.index, cfg)


def cmd_ingest(args: argparse.Namespace) -> None:
    from dosediff.config import DatasetConfig, section
    from dosediff.ingest import ingest_case

    if args.model:  # a new patient: ROI names and checks from the model folder
        from dosediff.new_patients import ingest_new_patient

        return ingest_new_patient(Path(args.input), args.case, _settings(args).get("dataset"), Path(args.model),
                                  Path(args.out))
    dataset = section(_settings(args), DatasetConfig, "dataset")
    ingest_case(Path(args.input), args.case, dataset, Path(args.out), require_dose=not args.no_dose)


def cmd_preprocess(args: argparse.Namespace) -> None:
    from dosediff.config import DatasetConfig, PreprocessConfig, section
    from dosediff.io.nifti import read_case
    from dosediff.preprocess.pipeline import preprocess_case

    if args.model:  # the model's ROI order and preprocessing, not the user's
        from dosediff.new_patients import preprocess_new_patient

        return preprocess_new_patient(Path(args.input), Path(args.model), Path(args.out))
    settings = _settings(args)
    dataset = section(settings, DatasetConfig, "dataset")
    cfg = section(settings, PreprocessConfig, "preprocess")
    preprocess_case(read_case(Path(args.input)), dataset, cfg, Path(args.out))


def cmd_prepare(args: argparse.Namespace) -> None:
    from dosediff.config import DatasetConfig, PreprocessConfig, section
    from dosediff.prepare import prepare_case

    settings = _settings(args)
    dataset = section(settings, DatasetConfig, "dataset")
    cfg = section(settings, PreprocessConfig, "preprocess")
    prepare_case(Path(args.input), args.case, dataset, cfg, Path(args.out), Path(args.h5))


def cmd_split(args: argparse.Namespace) -> None:
    from dosediff.config import DatasetConfig, SplitConfig, section
    from dosediff.data.splits import make_splits, write_splits

    settings = _settings(args)
    dataset = section(settings, DatasetConfig, "dataset")
    cfg = section(settings, SplitConfig, "split")
    splits = make_splits(list(args.cases), dataset.source, cfg)
    evaluate_on = cfg.evaluation_split(splits)
    write_splits(Path(args.out), splits, evaluate_on)
    log.info("split: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()) + f"; evaluated: {evaluate_on}")


def cmd_train(args: argparse.Namespace) -> None:
    from dosediff.config import DatasetConfig, section
    from dosediff.experiment import ExperimentConfig
    from dosediff.train import train

    settings = _settings(args)
    dataset = section(settings, DatasetConfig, "dataset")  # built once: the experiment's ROIs and config.json
    exp = ExperimentConfig.from_settings(settings, args.experiment, dataset)
    train(exp, dataset, Path(args.h5_dir), Path(args.splits), Path(args.out), args.threads)


def cmd_check_config(args: argparse.Namespace) -> None:
    from dosediff.config_check import check_config

    check_config(_settings(args))
    log.info("config: every section and where they meet checked; no errors")


def cmd_model_info(args: argparse.Namespace) -> None:
    import json

    from dosediff.experiment import ExperimentConfig
    from dosediff.models.factory import describe

    exp = ExperimentConfig.from_settings(_settings(args), args.experiment)
    print(json.dumps({"experiment": exp.name, **describe(exp.network)}, indent=2, default=str))


def cmd_predict(args: argparse.Namespace) -> None:
    import json

    from dosediff.predict import predict_case

    overrides = json.loads(args.sample) if args.sample else {}
    if not isinstance(overrides, dict):
        raise InputError(f"--sample {args.sample}: not a JSON mapping; expected e.g. '{{\"n_samples\": 2}}'. "
                         "Fix: pass the sample settings as a JSON object")
    overrides.update({k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None})
    predict_case(Path(args.model), Path(args.h5), Path(args.case_dir), Path(args.out),
                 sample_overrides=overrides or None, device=args.device, threads=args.threads)


def cmd_mean_dose(args: argparse.Namespace) -> None:
    from dosediff.baseline import mean_dose_prediction

    mean_dose_prediction([Path(p) for p in args.train_h5], Path(args.h5), Path(args.out))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from dosediff.evaluate import evaluate_experiment

    evaluate_experiment(_settings(args), args.experiment, args.references, args.predictions, Path(args.out),
                        figures=not args.no_figures, label=args.label)


def cmd_study(args: argparse.Namespace) -> None:
    from dosediff.evaluate import evaluate_study

    evaluate_study(_settings(args), args.experiment, args.references, args.predictions, Path(args.out))


def cmd_submission(args: argparse.Namespace) -> None:
    from dosediff.submission import write_submission

    write_submission(args.references, args.predictions, Path(args.out))


def cmd_report(args: argparse.Namespace) -> None:
    from dosediff.config import ReportConfig, section
    from dosediff.metrics.evaluate import EvaluationConfig
    from dosediff.report.build import build_report

    settings = _settings(args)
    build_report(section(settings, ReportConfig, "report"), args.metrics, Path(args.out),
                 section(settings, EvaluationConfig, "evaluate"), steps_csv=args.steps, seeds_csv=args.seeds,
                 references=args.references, predictions=args.predictions)


def cmd_report_case(args: argparse.Namespace) -> None:
    from dosediff.new_patients import report_new_patient

    report_new_patient(Path(args.case_dir), Path(args.prediction), Path(args.model),
                       _settings(args).get("predict"), Path(args.out))


REQUIRED: dict = {"required": True}
OPTIONAL: dict = {"default": None}
CASES: dict = {"required": True, "nargs": "+"}
FLAG: dict = {"action": "store_true"}
THREADS = ("--threads", {"type": int, "default": None}, "CPU threads for torch")
EXPERIMENT = ("--experiment", REQUIRED, "experiment name under experiments:")
FILES: dict = {**CASES, "type": Path}
PATH: dict = {"default": None, "type": Path}
SOME_FILES: dict = {"nargs": "*", "type": Path, "default": []}
REFERENCES = ("--references", FILES, "ingested case folders (reference dose and ROIs)")
PREDICTIONS = ("--predictions", FILES, "each case's <case>.nii.gz, in the order of --references")


def _settings_arg(uses: str, options: dict = REQUIRED) -> tuple[str, dict, str]:
    return ("--settings", options, f"{SETTINGS_HELP} ({uses})")


def _add(sub: argparse._SubParsersAction, name: str, func: object, text: str,
         *arguments: tuple[str, dict, str]) -> None:
    """One subcommand: arguments are (flag, argparse options, help)."""
    p = sub.add_parser(name, help=text)
    for flag, options, help_text in arguments:
        p.add_argument(flag, help=help_text, **options)
    p.set_defaults(func=func)


def _add_data_stages(sub: argparse._SubParsersAction) -> None:
    _add(sub, "phantom", cmd_phantom, "write one synthetic DICOM-RT patient (CT, RTSTRUCT, RTDOSE, RTPLAN)",
         _settings_arg("uses section: phantom"), ("--case", REQUIRED, "case id, e.g. phantom_001"),
         ("--index", {"required": True, "type": int}, "patient number (seeds the anatomy with phantom.seed)"),
         ("--out", REQUIRED, "output folder for the patient's DICOM files"))
    _add(sub, "ingest", cmd_ingest, "read a DICOM-RT or OpenKBP patient folder into the NIfTI case folder",
         _settings_arg("uses section: dataset"),
         ("--case", REQUIRED, "case id (the folder name or a pseudonym; never a patient ID)"),
         ("--input", REQUIRED, "the patient's source folder"),
         ("--out", REQUIRED, "output case folder (ct.nii.gz, dose.nii.gz, roi/, case.json)"),
         ("--no-dose", FLAG, "allow cases without a planned dose (prediction only)"),
         ("--model", OPTIONAL, "a new patient for this model folder: its ROIs, the dose optional"))
    _add(sub, "preprocess", cmd_preprocess, "body mask, crop/resize and distance maps -> one HDF5 per case",
         ("--model", OPTIONAL, "preprocess as this model folder's training data (no --settings)"),
         _settings_arg("uses sections: dataset, preprocess", OPTIONAL),
         ("--input", REQUIRED, "case folder written by `dosediff ingest`"), ("--out", REQUIRED, "output HDF5 file"))
    _add(sub, "prepare", cmd_prepare, "ingest and preprocess in one process: the case folder and its HDF5",
         _settings_arg("uses sections: dataset, preprocess"),
         ("--case", REQUIRED, "case id (the folder name or a pseudonym; never a patient ID)"),
         ("--input", REQUIRED, "the patient's source folder"),
         ("--out", REQUIRED, "output case folder, as `dosediff ingest` writes it"),
         ("--h5", REQUIRED, "output HDF5 file, as `dosediff preprocess` writes it"))
    _add(sub, "split", cmd_split, "train/validation/test split by patient -> splits.json",
         _settings_arg("uses sections: dataset, split"), ("--cases", CASES, "all case ids of the dataset"),
         ("--out", REQUIRED, "output splits.json"))


def _add_model_stages(sub: argparse._SubParsersAction) -> None:
    _add(sub, "train", cmd_train, "train one experiment (resumes from its last checkpoint)",
         _settings_arg("uses sections: dataset, experiments"), EXPERIMENT,
         ("--h5-dir", REQUIRED, "folder of the per-case HDF5 files"), ("--splits", REQUIRED, "splits.json"),
         ("--out", REQUIRED, "model folder (checkpoint.pt, model.safetensors, config.json, log)"), THREADS)
    _add(sub, "check-config", cmd_check_config, "check a whole config (what the workflow checks at its start)",
         ("--settings", REQUIRED, "the YAML config file"))
    _add(sub, "model-info", cmd_model_info, "print an experiment's network size (parameter count)",
         _settings_arg("uses sections: dataset, experiments"), EXPERIMENT)
    _add(sub, "predict", cmd_predict, "predict one case's dose on its original CT grid (NIfTI, RTDOSE)",
         ("--model", REQUIRED, "model folder written by `dosediff train`"),
         ("--h5", REQUIRED, "the case's HDF5 file"),
         ("--case-dir", REQUIRED, "the case's ingest folder (CT grid, DICOM references)"),
         ("--out", REQUIRED, "output NIfTI (a .json manifest is written beside it)"),
         ("--steps", {"type": int, "default": None}, "override the experiment's DDIM steps"),
         ("--seed", {"type": int, "default": None}, "override the experiment's sampling seed"),
         ("--sample", OPTIONAL, "sample settings to override, as JSON (e.g. {\"n_samples\": 4})"),
         ("--device", OPTIONAL, "torch device (default: cuda when present, else cpu)"), THREADS)
    _add(sub, "mean-dose", cmd_mean_dose, "the trivial predictor: the training set's mean dose per voxel position",
         ("--train-h5", CASES, "training cases' HDF5 files"), ("--h5", REQUIRED, "the case's HDF5 file"),
         ("--out", REQUIRED, "output NIfTI on the case's CT grid"))


def _add_evaluation_stages(sub: argparse._SubParsersAction) -> None:
    _add(sub, "evaluate", cmd_evaluate, "metrics and figures of one experiment's predictions",
         _settings_arg("uses: dataset, preprocess, evaluate"),
         ("--experiment", REQUIRED, "experiment name (labels the rows)"), REFERENCES, PREDICTIONS,
         ("--out", REQUIRED, "output folder (per_case.csv, summary, figures/)"),
         ("--no-figures", FLAG, "skip the per-case figures"),
         ("--label", OPTIONAL, "the model's name in figure titles (default: the experiment)"))
    _add(sub, "study", cmd_study, "metrics of a sampling study (DDIM steps or seeds)",
         _settings_arg("uses: dataset, preprocess, evaluate"), ("--experiment", REQUIRED, "experiment name"),
         REFERENCES, ("--predictions", FILES, "<case>.nii.gz of every variant (the manifest beside each gives "
                      "the case, steps and seed)"), ("--out", REQUIRED, "output CSV"))
    _add(sub, "submission", cmd_submission, "OpenKBP predictions as the challenge's pt_N.csv submission files",
         ("--references", FILES, "ingested case folders pt_N (grid, possible-dose mask)"), PREDICTIONS,
         ("--out", REQUIRED, "output folder of <case>.csv files"))
    _add(sub, "report", cmd_report, "the paper's tables and dataset-level figures from the metric tables",
         _settings_arg("uses: report, evaluate"), ("--metrics", FILES, "per_case.csv of each experiment"),
         ("--steps", PATH, "steps study CSV"), ("--seeds", PATH, "seed study CSV"),
         ("--references", SOME_FILES, "case folders of the overlaid DVH figures"),
         ("--predictions", SOME_FILES,
          "each DVH model's <case>.nii.gz in the order of --references, model after model"),
         ("--out", REQUIRED, "output folder"))
    _add(sub, "report-case", cmd_report_case, "a new patient's planner report: clinical goals, DVHs, dose slices",
         _settings_arg("uses section: predict"), ("--model", REQUIRED, "model folder that made the prediction"),
         ("--case-dir", REQUIRED, "the case's ingest folder"),
         ("--prediction", REQUIRED, "predicted dose <case>.nii.gz (its _std beside it is used)"),
         ("--out", REQUIRED, "output report folder"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dosediff", description="DoseDiff dose prediction: each subcommand is "
                                     "one stage of the Snakemake workflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    _add_data_stages(sub)
    _add_model_stages(sub)
    _add_evaluation_stages(sub)
    return parser


def setup_logging(verbose: bool) -> None:
    """dosediff's own messages to stderr (the job log); other libraries' loggers (pydicom logs
    raw header bytes of damaged files) and Python warnings (which quote values) reach no handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [logging.NullHandler()]  # no lastResort printing for other loggers
    logging.captureWarnings(True)  # -> logger py.warnings, which has no handler


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad input, a full disk or an internal failure ends in one clean
    message and a non-zero status (the traceback only with -v)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        args.func(args)
    except InputError as err:
        log.error(str(err))
        return 2
    except OSError as err:  # a full disk, a permission, a vanished file
        name = Path(err.filename).name if err.filename else "an output file"
        log.error(f"{name}: {err.strerror or type(err).__name__}; expected room and permission to read "
                  "and write. Fix: free disk space or correct the permissions, then run the job again")
        return 2
    except Exception as err:
        if args.verbose:
            raise
        # Only the type: messages of library errors may quote header values.
        log.error(f"internal error in `dosediff {args.command}` ({type(err).__name__}); rerun with -v for "
                  "the traceback and report it")
        return 1
    return 0

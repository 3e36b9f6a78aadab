"""The only argument parser: `dosediff <stage> ...`, one subcommand per workflow rule.

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
    from dosediff.train import train

    train(_settings(args), args.experiment, Path(args.h5_dir), Path(args.splits), Path(args.out), args.threads)


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
    from dosediff.predict import predict_case

    import json

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

    evaluate_experiment(_settings(args), args.experiment, list(args.cases), Path(args.nifti_dir),
                        Path(args.predictions), Path(args.out), figures=not args.no_figures,
                        label=args.label)


def cmd_study(args: argparse.Namespace) -> None:
    from dosediff.evaluate import evaluate_study

    evaluate_study(_settings(args), args.experiment, list(args.variants), list(args.cases),
                   Path(args.nifti_dir), Path(args.study_dir), Path(args.out))


def cmd_submission(args: argparse.Namespace) -> None:
    from dosediff.submission import write_submission

    write_submission(list(args.cases), Path(args.nifti_dir), Path(args.predictions), Path(args.out))


def cmd_report(args: argparse.Namespace) -> None:
    from dosediff.config import section
    from dosediff.metrics.evaluate import EvaluationConfig, gamma_criterion
    from dosediff.report.build import ReportConfig, build_report

    cfg = section(_settings(args), ReportConfig, "report")
    evaluation = section(_settings(args), EvaluationConfig, "evaluate")
    gamma = evaluation.gamma
    build_report(cfg, [Path(p) for p in args.metrics], Path(args.out),
                 gamma_text=gamma_criterion(gamma) if gamma.enabled else "not computed (evaluate.gamma.enabled false)",
                 cases=args.cases, nifti_dir=Path(args.nifti_dir) if args.nifti_dir else None,
                 predictions_dir=Path(args.predictions_dir) if args.predictions_dir else None,
                 dvh_bin_gy=evaluation.dvh_bin_gy,
                 steps_csv=Path(args.steps) if args.steps else None,
                 seeds_csv=Path(args.seeds) if args.seeds else None)


def cmd_report_case(args: argparse.Namespace) -> None:
    from dosediff.new_patients import report_new_patient

    report_new_patient(Path(args.case_dir), Path(args.prediction), Path(args.model),
                       _settings(args).get("predict"), Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dosediff",
        description="DoseDiff dose prediction: each subcommand is one stage of the Snakemake workflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")

    p = sub.add_parser("phantom", help="write one synthetic DICOM-RT patient (CT, RTSTRUCT, RTDOSE, RTPLAN)")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses section: phantom)")
    p.add_argument("--case", required=True, help="case id, e.g. phantom_001")
    p.add_argument("--index", required=True, type=int, help="patient number (seeds the anatomy with phantom.seed)")
    p.add_argument("--out", required=True, help="output folder for the patient's DICOM files")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("ingest", help="read a DICOM-RT or OpenKBP patient folder into the NIfTI case folder")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses section: dataset)")
    p.add_argument("--case", required=True, help="case id (the folder name or a pseudonym; never a patient ID)")
    p.add_argument("--input", required=True, help="the patient's source folder")
    p.add_argument("--out", required=True, help="output case folder (ct.nii.gz, dose.nii.gz, roi/, case.json)")
    p.add_argument("--no-dose", action="store_true", help="allow cases without a planned dose (prediction only)")
    p.add_argument("--model", default=None, help="a new patient for this model folder: its ROIs, the dose optional")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("preprocess", help="body mask, crop/resize and distance maps -> one HDF5 per case")
    p.add_argument("--model", default=None, help="preprocess as this model folder's training data (no --settings)")
    p.add_argument("--settings", default=None, help=SETTINGS_HELP + " (uses sections: dataset, preprocess)")
    p.add_argument("--input", required=True, help="case folder written by `dosediff ingest`")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("split", help="train/validation/test split by patient -> splits.json")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses sections: dataset, split)")
    p.add_argument("--cases", required=True, nargs="+", help="all case ids of the dataset")
    p.add_argument("--out", required=True, help="output splits.json")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("train", help="train one experiment (resumes from its last checkpoint)")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses sections: dataset, experiments)")
    p.add_argument("--experiment", required=True, help="experiment name under experiments:")
    p.add_argument("--h5-dir", required=True, help="folder of the per-case HDF5 files")
    p.add_argument("--splits", required=True, help="splits.json")
    p.add_argument("--out", required=True, help="model folder (checkpoint.pt, model.safetensors, config.json, log)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("check-config", help="check a whole config (what the workflow checks at its start)")
    p.add_argument("--settings", required=True, help="the YAML config file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("model-info", help="print an experiment's network size (parameter count)")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses sections: dataset, experiments)")
    p.add_argument("--experiment", required=True, help="experiment name under experiments:")
    p.set_defaults(func=cmd_model_info)

    p = sub.add_parser("predict", help="predict one case's dose on its original CT grid (NIfTI, RTDOSE)")
    p.add_argument("--model", required=True, help="model folder written by `dosediff train`")
    p.add_argument("--h5", required=True, help="the case's HDF5 file")
    p.add_argument("--case-dir", required=True, help="the case's ingest folder (CT grid, DICOM references)")
    p.add_argument("--out", required=True, help="output NIfTI (a .json manifest is written beside it)")
    p.add_argument("--steps", type=int, default=None, help="override the experiment's DDIM steps")
    p.add_argument("--seed", type=int, default=None, help="override the experiment's sampling seed")
    p.add_argument("--sample", default=None, help="sample settings to override, as JSON (e.g. {\"n_samples\": 4})")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("mean-dose", help="the trivial predictor: the training set's mean dose per voxel position")
    p.add_argument("--train-h5", required=True, nargs="+", help="training cases' HDF5 files")
    p.add_argument("--h5", required=True, help="the case's HDF5 file")
    p.add_argument("--out", required=True, help="output NIfTI on the case's CT grid")
    p.set_defaults(func=cmd_mean_dose)

    p = sub.add_parser("evaluate", help="metrics and figures of one experiment's predictions")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses: dataset, preprocess, evaluate)")
    p.add_argument("--experiment", required=True, help="experiment name (labels the rows)")
    p.add_argument("--cases", required=True, nargs="+", help="case ids to evaluate")
    p.add_argument("--nifti-dir", required=True, help="folder of ingested cases (reference dose and ROIs)")
    p.add_argument("--predictions", required=True, help="folder of <case>.nii.gz predictions")
    p.add_argument("--out", required=True, help="output folder (per_case.csv, summary, figures/)")
    p.add_argument("--no-figures", action="store_true", help="skip the per-case figures")
    p.add_argument("--label", default=None, help="the model's name in figure titles (default: the experiment)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("study", help="metrics of a sampling study (DDIM steps or seeds)")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses: dataset, preprocess, evaluate)")
    p.add_argument("--experiment", required=True, help="experiment name")
    p.add_argument("--variants", required=True, nargs="+", help="prediction sets, e.g. steps8_seed0")
    p.add_argument("--cases", required=True, nargs="+", help="case ids")
    p.add_argument("--nifti-dir", required=True, help="folder of ingested cases")
    p.add_argument("--study-dir", required=True, help="folder holding one sub-folder per variant")
    p.add_argument("--out", required=True, help="output CSV")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("submission", help="OpenKBP predictions as the challenge's pt_N.csv submission files")
    p.add_argument("--cases", required=True, nargs="+", help="case ids (pt_N)")
    p.add_argument("--nifti-dir", required=True, help="folder of ingested cases (grid, possible-dose mask)")
    p.add_argument("--predictions", required=True, help="folder of <case>.nii.gz predictions")
    p.add_argument("--out", required=True, help="output folder of <case>.csv files")
    p.set_defaults(func=cmd_submission)

    p = sub.add_parser("report", help="the paper's tables and dataset-level figures from the metric tables")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses: report, evaluate)")
    p.add_argument("--metrics", required=True, nargs="+", help="per_case.csv of each experiment")
    p.add_argument("--steps", default=None, help="steps study CSV")
    p.add_argument("--seeds", default=None, help="seed study CSV")
    p.add_argument("--cases", nargs="*", default=None, help="cases of the overlaid DVH figures")
    p.add_argument("--nifti-dir", default=None, help="folder of ingested cases (reference dose and ROIs)")
    p.add_argument("--predictions-dir", default=None, help="folder of <experiment>/<case>.nii.gz predictions")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("report-case", help="a new patient's planner report: clinical goals, DVHs, dose slices")
    p.add_argument("--settings", required=True, help=SETTINGS_HELP + " (uses section: predict)")
    p.add_argument("--model", required=True, help="model folder that made the prediction")
    p.add_argument("--case-dir", required=True, help="the case's ingest folder")
    p.add_argument("--prediction", required=True, help="predicted dose <case>.nii.gz (its _std beside it is used)")
    p.add_argument("--out", required=True, help="output report folder")
    p.set_defaults(func=cmd_report_case)
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

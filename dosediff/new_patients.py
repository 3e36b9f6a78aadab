"""Prediction-only stages for new patients with a model trained elsewhere.

ingest_new_patient reads a patient folder with the model's ROI names (the user's aliases
added), the plan dose optional; preprocess_new_patient prepares it with the model's own
preprocessing; report_new_patient writes the planner's report (goals, DVHs, slices). Each
takes every model-side setting from the model folder's config.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dosediff.errors import InputError, input_error, log, warn
from dosediff.goals import DATASET_SITES, Goal, parse_goals
from dosediff.ingest import read_source_case
from dosediff.io.nifti import read_case, read_image, write_case
from dosediff.model_spec import ModelSpec, patient_dataset, read_model_spec
from dosediff.names import output_paths
from dosediff.preprocess.pipeline import preprocess_case
from dosediff.report.planner import write_planner_report


def ingest_new_patient(folder: Path, case_id: str, user_dataset: dict | None, model_dir: Path,
                       out_dir: Path) -> None:
    """Patient folder -> ingest folder, checked against the model's ROIs (written only when complete).

    Required ROIs of the model missing: an error naming the model, the patient and the alias
    line to add. Other model ROIs missing: a warning (their condition channels are all zero)."""
    try:
        spec = read_model_spec(model_dir)
    except InputError as err:  # an unusable model folder: say for which patient too
        raise InputError(f"case {case_id}: {err}") from None
    dataset = patient_dataset(spec, user_dataset)
    try:
        case = read_source_case(Path(folder), case_id, dataset, require_dose=False, strict_dose=False)
    except InputError as err:
        if "required ROIs" in str(err):
            need = [r for r in dataset.required_rois if f"'{r}'" in str(err).split("are missing")[0]] or \
                dataset.required_rois
            raise InputError(f"{spec.label} needs ROIs {dataset.required_rois}; {err} Alias line to add to the "
                             f"prediction config: `dataset: {{aliases: {{{need[0]}: [\"<the patient's name for "
                             f"{need[0]}>\"]}}}}`") from None
        if "no RTSTRUCT" in str(err):
            raise InputError(f"{spec.label} needs the patient's contours; {err}") from None
        raise
    if not case.masks:
        raise input_error(f"case {case_id}", f"none of the ROIs of {spec.label}: {dataset.rois}",
                          "the patient's targets and organs at risk under the model's names or aliases",
                          "map the patient's ROI names to the model's in dataset.aliases", case=case_id)
    missing = [r for r in dataset.rois if r not in case.masks]
    if missing:
        warn(f"case {case_id}", f"ROIs {missing} of {spec.label} are missing",
             "their condition channels are all zero (as the authors' code does); the prediction may suffer",
             case=case_id)
    write_case(case, Path(out_dir))


def preprocess_new_patient(case_dir: Path, model_dir: Path, out_path: Path) -> None:
    """Ingest folder -> HDF5 with the model's ROI order, size, representations and body threshold."""
    spec = read_model_spec(model_dir)
    preprocess_case(read_case(Path(case_dir)), spec.dataset, spec.preprocess, Path(out_path))


def resolve_goals(spec: ModelSpec, predict: dict | None) -> list[Goal]:
    """predict.goals (a site name or a mapping), else the default of the model's training site, checked
    against the model's ROIs."""
    predict = predict or {}
    goals = predict.get("goals", DATASET_SITES.get(spec.dataset.name))
    if goals is None:
        warn("setting predict.goals", f"not set, and {spec.label} has no default site",
             "the report has no clinical goals table; set predict.goals (a site or {ROI: {metric: limit}})")
    return parse_goals(goals, spec.dataset.rois)


def report_new_patient(case_dir: Path, prediction: Path, model_dir: Path, predict: dict | None,
                       out_dir: Path) -> None:
    """Planner report of one predicted patient (dosediff.report.planner)."""
    spec = read_model_spec(model_dir)
    goals = resolve_goals(spec, predict)
    case = read_case(Path(case_dir))
    dose, geo = read_image(Path(prediction))
    std_path = output_paths(Path(prediction))["std"]
    std = read_image(std_path)[0] if std_path.is_file() else None
    if not geo.same_grid(case.geometry):
        raise input_error(prediction, f"dose grid {geo.shape}", f"the CT grid {case.geometry.shape} of {case_dir}",
                          "pass the prediction and the ingest folder of the same case", case=case.case_id)
    bin_gy = (predict or {}).get("dvh_bin_gy", 0.1)
    if isinstance(bin_gy, bool) or not isinstance(bin_gy, (int, float)) or not bin_gy > 0:
        raise input_error("setting predict.dvh_bin_gy", f"value {bin_gy!r}", "a positive bin width in Gy",
                          "set predict.dvh_bin_gy, e.g. 0.1")
    table = write_planner_report(case, dose.astype(np.float64), std, goals, spec.dataset.targets,
                                 spec.dataset.prescription_gy, spec.label, Path(out_dir), float(bin_gy))
    failed = table[table.predicted_pass == "FAIL"]
    log.info(f"case {case.case_id}: {len(table)} goals, {len(failed)} predicted to fail"
             + (f" ({', '.join(failed.roi + ' ' + failed.goal)})" if len(failed) else "") + f" -> {out_dir}")

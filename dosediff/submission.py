"""Submission stage: one experiment's OpenKBP predictions as the challenge's `pt_N.csv` files,
so users can score them with the organisers' code or compare with published numbers.

Each file is the official sparse dose format (io/openkbp.py) on the case's 128^3 grid, 0 Gy
outside the possible-dose mask (the official dose score counts every voxel outside it as an
error)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dosediff.atomic import atomic_dir
from dosediff.errors import input_error
from dosediff.io.nifti import read_case, read_image
from dosediff.io.openkbp import write_openkbp_dose_csv
from dosediff.names import case_predictions

log = logging.getLogger("dosediff")


def submission_dose(case_dir: Path, prediction: Path) -> np.ndarray:
    """The prediction (z, y, x) on the case's grid, set to 0 outside its possible-dose mask."""
    case = read_case(case_dir)
    dose, geometry = read_image(prediction)
    if not geometry.same_grid(case.geometry):
        raise input_error(prediction, f"grid {geometry.shape} at {geometry.spacing} mm",
                          f"the case's grid {case.geometry.shape} at {case.geometry.spacing} mm",
                          "predict again with `dosediff predict` (it writes on the case's grid)", case=case.case_id)
    if case.possible_dose is None:
        raise input_error(Path(case_dir), "no possible_dose_mask", "an OpenKBP case (it has a possible-dose mask)",
                          "write submissions only for datasets with dataset.source openkbp", case=case.case_id)
    return np.where(case.possible_dose > 0, dose, 0).astype(np.float32)


def write_submission(references: list[Path], predictions: list[Path], out_dir: Path) -> None:
    """out_dir/<case>.csv of each case folder and its prediction; the folder appears only when all are."""
    with atomic_dir(Path(out_dir)) as tmp:
        for case_id, case_dir, prediction in case_predictions(references, predictions, "submission"):
            write_openkbp_dose_csv(submission_dose(case_dir, prediction), tmp / f"{case_id}.csv")
    log.info(f"submission: {len(references)} OpenKBP dose files in {out_dir}")

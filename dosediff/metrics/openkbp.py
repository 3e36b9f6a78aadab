"""OpenKBP's dose score and DVH score, computed the way the official open-kbp evaluation does.

Read from the official evaluation (open-kbp, provided_code/dose_evaluation_class.py) and
reimplemented here:

- Dose error of a patient: sum of |reference - prediction| over *all* voxels of the 128^3
  grid, divided by the number of voxels in possible_dose_mask. A prediction that is not 0
  outside the mask is penalised, and voxels outside the mask still count in the numerator.
  Dose score: the mean of the patients' dose errors.
- DVH metrics, on the reference's ROI masks (the same masks for reference and prediction),
  over all voxels of the mask, including ROI voxels outside possible_dose_mask (their dose
  is 0 in the reference): OARs D_0.1_cc and mean; targets D_99 = percentile 1, D_95 =
  percentile 5, D_1 = percentile 99, all np.percentile with its default linear
  interpolation. D_0.1_cc: n = max(1, round(100 / voxel volume in mm^3)) whole voxels (so
  0.1 cc is rounded to whole voxels: 3 voxels of 38.1 mm^3 = 0.114 cc), percentile
  100 - 100 n / ROI voxels. Only the ten OpenKBP ROI names are evaluated; a missing ROI has
  no cells.
- DVH score: the mean of |reference metric - predicted metric| over every (patient, ROI,
  metric) cell that exists, pooled over patients (not a mean of per-patient means).

Arithmetic is float64 like the official loader's arrays. One deviation: for an OAR of fewer
voxels than n the official percentile is negative and numpy raises; here it is clipped to
0 (= the minimum dose) and noted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dosediff.errors import input_error
from dosediff.metrics.dvh import roi_doses

OPENKBP_OARS: tuple[str, ...] = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid",
                                 "Esophagus", "Larynx", "Mandible")
OPENKBP_TARGETS: tuple[str, ...] = ("PTV56", "PTV63", "PTV70")


def dose_error(reference: np.ndarray, predicted: np.ndarray, possible_dose: np.ndarray,
               case: str | None = None) -> float:
    """One patient's OpenKBP dose error (Gy): sum |ref - pred| over all voxels / possible-dose voxels."""
    for what, arr in (("predicted dose", predicted), ("possible_dose_mask", possible_dose)):
        if tuple(np.shape(arr)) != tuple(np.shape(reference)):
            raise input_error(what, f"shape {tuple(np.shape(arr))} differs from the reference dose's "
                              f"{tuple(np.shape(reference))}", "the reference dose's grid",
                              "put the prediction on the OpenKBP 128^3 grid of the case", case=case)
    n = int(np.count_nonzero(possible_dose))
    if n == 0:
        raise input_error("possible_dose_mask", "no voxel in the mask", "a non-empty possible-dose mask",
                          "check possible_dose_mask.csv of this case", case=case)
    diff = np.abs(np.asarray(reference, dtype=np.float64) - np.asarray(predicted, dtype=np.float64))
    return float(diff.sum() / n)


def voxels_in_tenth_cc(spacing_mm: Sequence[float]) -> int:
    """OpenKBP's whole-voxel count for 0.1 cc: max(1, round(100 / voxel volume in mm^3))."""
    return int(max(1.0, np.round(100.0 / float(np.prod(spacing_mm)))))


def dvh_metrics(dose: np.ndarray, masks: Mapping[str, np.ndarray], spacing_mm: Sequence[float],
                oars: Sequence[str] = OPENKBP_OARS, targets: Sequence[str] = OPENKBP_TARGETS,
                case: str | None = None, notes: list[str] | None = None) -> dict[tuple[str, str], float]:
    """OpenKBP DVH metrics {(roi, metric): Gy} for the ROIs present (non-empty) in `masks`."""
    n_tenth = voxels_in_tenth_cc(spacing_mm)
    out: dict[tuple[str, str], float] = {}
    for roi in (*oars, *targets):
        mask = masks.get(roi)
        if mask is None:
            continue
        d = roi_doses(dose, mask, roi, case)
        if d.size == 0:
            continue
        if roi in oars:
            q = 100.0 - n_tenth / d.size * 100.0
            if q < 0:
                if notes is not None:
                    notes.append(f"{roi}: {d.size} voxels < {n_tenth} in 0.1 cc; D_0.1_cc taken as the minimum")
                q = 0.0
            out[(roi, "D_0.1_cc")] = float(np.percentile(d, q))
            out[(roi, "mean")] = float(d.mean())
        else:
            out[(roi, "D_99")] = float(np.percentile(d, 1))
            out[(roi, "D_95")] = float(np.percentile(d, 5))
            out[(roi, "D_1")] = float(np.percentile(d, 99))
    return out


@dataclass
class OpenKBPCase:
    """One patient's OpenKBP evaluation: dose error and DVH metrics of reference and prediction."""

    dose_error: float
    reference: dict[tuple[str, str], float]
    predicted: dict[tuple[str, str], float]
    notes: list[str] = field(default_factory=list)

    @property
    def dvh_errors(self) -> dict[tuple[str, str], float]:
        """|reference - predicted| per (roi, metric) cell."""
        return {k: abs(self.reference[k] - self.predicted[k]) for k in self.reference}


def evaluate_openkbp_case(reference: np.ndarray, predicted: np.ndarray, masks: Mapping[str, np.ndarray],
                          spacing_mm: Sequence[float], possible_dose: np.ndarray,
                          case: str | None = None) -> OpenKBPCase:
    """Dose error and DVH metrics of one patient (masks are the reference's)."""
    err = dose_error(reference, predicted, possible_dose, case)
    notes: list[str] = []
    ref = dvh_metrics(reference, masks, spacing_mm, case=case, notes=notes)
    pred = dvh_metrics(predicted, masks, spacing_mm, case=case)
    return OpenKBPCase(err, ref, pred, notes)

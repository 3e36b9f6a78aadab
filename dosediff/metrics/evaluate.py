"""Every metric of one case: image metrics, per-ROI dose-volume metrics with the paper's dose
and volume scores, the gamma pass rate, and OpenKBP's metrics when a possible-dose mask is given.

The result is one flat dict (a row of the per-case table), keys:

- mae_gy, psnr_db, ssim                 inside the body (paper sec. 3.2)
- <ROI>/<metric>/ref, /pred, /absdiff   configured D_V (Gy) and V_D (% of the ROI) metrics
- dose_score_gy                         mean |delta D| over the case's finite D-type cells
- volume_score_pct                      mean |delta V| over the case's finite V-type cells
- dose_bias_gy, volume_bias_pct         the same means of the signed delta = predicted - reference
- gamma_pass_pct, gamma_points, gamma_nan_points, gamma_criterion ("3%/3mm global, 10% cut-off")
- openkbp_dose_error_gy, openkbp/<ROI>/<metric>/absdiff   (with a possible-dose mask)
- notes                                 "; "-joined reasons for every NaN (absent ROI, empty mask, ...)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dosediff.errors import input_error
from dosediff.metrics.dvh import MetricSpec, parse_metric, parse_metric_sets, roi_metrics
from dosediff.metrics.gamma import GammaConfig, gamma_pass_rate
from dosediff.metrics.image import check_same_grid, image_metrics
from dosediff.metrics.openkbp import evaluate_openkbp_case


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation settings (config section `evaluate`).

    metrics: ROI -> metric names, e.g. {PTV: [D95, V95], Heart: [Dmean, V30]}. When empty,
    every ROI of the case gets target_metrics (targets) or oar_metrics (OARs); when given,
    exactly the listed ROIs are evaluated (an absent one gives NaN with a note).
    """

    c_range: float = 75.0  # Gy: PSNR peak and SSIM constants
    ssim_sigma_mm: float | None = None  # None: 1.5 voxels in-plane, same mm along z
    dvh_bin_gy: float = 0.01
    metrics: dict[str, list[str]] = field(default_factory=dict)
    target_metrics: list[str] = field(default_factory=lambda: ["D95", "V95"])
    oar_metrics: list[str] = field(default_factory=lambda: ["Dmean", "Dmax"])
    gamma: GammaConfig = field(default_factory=GammaConfig)
    # dose-slice figures: isodose lines at these % of the prescription ([] for none); on by
    # default because coverage of the target (95 %) and the spread of dose (50 %) are what a
    # physicist reads off a dose slice first, and the colour wash alone does not show them
    isodose_percent: list[float] = field(default_factory=lambda: [95.0, 50.0])

    def __post_init__(self) -> None:
        if not self.c_range > 0:
            raise input_error("setting evaluate.c_range", f"value {self.c_range}", "a positive dose range in Gy",
                              "set evaluate.c_range, e.g. 75")
        if self.ssim_sigma_mm is not None and not self.ssim_sigma_mm > 0:
            raise input_error("setting evaluate.ssim_sigma_mm", f"value {self.ssim_sigma_mm}",
                              "a positive width in mm or null", "set null for the default window")
        if not self.dvh_bin_gy > 0:
            raise input_error("setting evaluate.dvh_bin_gy", f"value {self.dvh_bin_gy}", "a positive bin width in Gy",
                              "set evaluate.dvh_bin_gy, e.g. 0.01")
        bad = [p for p in self.isodose_percent if not 0 < p <= 200]
        if bad or len(set(self.isodose_percent)) != len(self.isodose_percent):
            raise input_error("setting evaluate.isodose_percent", f"value {self.isodose_percent}",
                              "distinct percentages of the prescription in (0, 200]",
                              "e.g. [95, 50], or [] for no isodose lines")
        parse_metric_sets(self.metrics, "evaluate.metrics")
        for key in ("target_metrics", "oar_metrics"):
            for i, text in enumerate(getattr(self, key)):
                parse_metric(text, f"evaluate.{key}[{i}]")

    def metric_sets(self, rois: Sequence[str], targets: Mapping[str, float]) -> dict[str, list[MetricSpec]]:
        """The metric set per ROI for a case whose ROIs are `rois`."""
        if self.metrics:
            return parse_metric_sets(self.metrics, "evaluate.metrics")
        return {roi: [parse_metric(t) for t in (self.target_metrics if roi in targets else self.oar_metrics)]
                for roi in rois}


def gamma_criterion(g: GammaConfig) -> str:
    """The gamma criteria in words, e.g. "3%/3mm global, 10% cut-off" (tables and captions)."""
    return (f"{g.dose_percent:g}%/{g.distance_mm:g}mm {'local' if g.local else 'global'}, "
            f"{g.cutoff_percent:g}% cut-off")


def _check_dose(arr: np.ndarray, what: str, case: str | None) -> None:
    if np.ndim(arr) != 3:
        raise input_error(what, f"{np.ndim(arr)}-d array of shape {np.shape(arr)}", "a 3-d (z, y, x) dose in Gy",
                          "pass the dose volume of one case", case=case)
    if not np.all(np.isfinite(arr)):
        raise input_error(what, "NaN or infinite values", "finite doses in Gy",
                          "fill missing values (0 outside the dose grid) before evaluating", case=case)


def _dvh_cells(row: dict, reference: np.ndarray, predicted: np.ndarray, masks: Mapping[str, np.ndarray],
               spacing_mm: Sequence[float], sets: Mapping[str, list[MetricSpec]], levels: Mapping[str, float],
               case: str | None) -> list[str]:
    """The <ROI>/<metric>/ref, /pred, /absdiff keys, the dose and volume scores and their signed
    counterparts into `row`; returns the notes of the NaN cells."""
    ref_vals, reasons = roi_metrics(reference, masks, spacing_mm, sets, levels, case)
    pred_vals, _ = roi_metrics(predicted, masks, spacing_mm, sets, levels, case)
    d_cells, v_cells = [], []  # signed pred - ref of every finite cell
    for roi, specs in sets.items():
        for spec in specs:
            r, p = ref_vals[roi][spec.text], pred_vals[roi][spec.text]
            key = f"{roi}/{spec.text}"
            row[f"{key}/ref"], row[f"{key}/pred"], row[f"{key}/absdiff"] = r, p, abs(r - p)
            if not math.isnan(p - r):
                (d_cells if spec.kind == "D" else v_cells).append(p - r)
    row["dose_score_gy"] = float(np.mean(np.abs(d_cells))) if d_cells else math.nan
    row["volume_score_pct"] = float(np.mean(np.abs(v_cells))) if v_cells else math.nan
    # the signed counterparts: below 0 the model under-doses (D) or under-covers (V) on average
    row["dose_bias_gy"] = float(np.mean(d_cells)) if d_cells else math.nan
    row["volume_bias_pct"] = float(np.mean(v_cells)) if v_cells else math.nan
    return [f"{k}: {v}" for k, v in reasons.items()]


def evaluate_case(reference: np.ndarray, predicted: np.ndarray, masks: Mapping[str, np.ndarray],
                  spacing_mm: Sequence[float], body: np.ndarray | None, prescription_gy: float | None,
                  settings: EvaluationConfig | None = None, possible_dose: np.ndarray | None = None,
                  targets: Mapping[str, float] | None = None, case: str | None = None) -> dict:
    """All metrics of one case (see the module docstring for the keys).

    targets: target ROI -> its dose level in Gy (V_D of targets in % of it; a level <= 0 uses
    prescription_gy); ROIs not in it are OARs. masks hold the case's ROIs (absent ones missing).
    """
    cfg = settings or EvaluationConfig()
    _check_dose(reference, "reference dose", case)
    _check_dose(predicted, "predicted dose", case)
    check_same_grid(reference, predicted, "predicted dose", case)
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise input_error("spacing", f"value {[float(v) for v in spacing_mm]}", "three positive voxel sizes in mm (z, y, x)",
                          "pass the case geometry's spacing", case=case)
    targets = dict(targets or {})
    levels = {roi: (lvl if lvl and lvl > 0 else prescription_gy) for roi, lvl in targets.items()}
    notes: list[str] = []
    row: dict = {}

    img = image_metrics(reference, predicted, spacing_mm, body, cfg.c_range, cfg.ssim_sigma_mm, case)
    row.update(mae_gy=img["mae"], psnr_db=img["psnr"], ssim=img["ssim"])

    sets = cfg.metric_sets(list(masks), levels)
    notes += _dvh_cells(row, reference, predicted, masks, spacing_mm, sets, levels, case)

    g = cfg.gamma
    row["gamma_criterion"] = gamma_criterion(g)
    if g.enabled:
        res = gamma_pass_rate(reference, predicted, spacing_mm, body, g, case)
        row.update(gamma_pass_pct=res.pass_rate, gamma_points=res.evaluated_points,
                   gamma_nan_points=res.nan_points)
        if res.evaluated_points == 0:
            notes.append("gamma: no reference point above the cut-off")
    else:
        row.update(gamma_pass_pct=math.nan, gamma_points=0, gamma_nan_points=0)

    if possible_dose is not None:
        kbp = evaluate_openkbp_case(reference, predicted, masks, spacing_mm, possible_dose, case)
        row["openkbp_dose_error_gy"] = kbp.dose_error
        for (roi, metric), err in kbp.dvh_errors.items():
            row[f"openkbp/{roi}/{metric}/absdiff"] = err
        notes += [f"openkbp {n}" for n in kbp.notes]

    row["notes"] = "; ".join(notes)
    return row


def openkbp_scores_from_rows(rows: Sequence[Mapping]) -> dict[str, float]:
    """OpenKBP dose score and DVH score over cases from evaluate_case rows (cells pooled)."""
    errors = [r["openkbp_dose_error_gy"] for r in rows if "openkbp_dose_error_gy" in r]
    cells = [v for r in rows for k, v in r.items() if k.startswith("openkbp/") and not math.isnan(v)]
    return {"dose_score": float(np.mean(errors)) if errors else math.nan,
            "dvh_score": float(np.mean(cells)) if cells else math.nan}

"""Every metric of one case: image metrics, per-ROI dose-volume metrics with the paper's dose
and volume scores, the gamma pass rate, and OpenKBP's metrics when a possible-dose mask is given.

The result holds the case's rows of the per-case table (roi, metric, unit, reference,
predicted, value, note), in this order:
- Body: MAE (Gy), SSIM, PSNR (dB) inside the body (paper sec. 3.2), gamma_pass_rate (%)
- <ROI>: each configured D_V (Gy) and V_D (% of the ROI) metric, value |predicted - reference|
- <ROI>: openkbp_<metric> (Gy), OpenKBP's DVH errors (with a possible-dose mask)
- All: dose_score and volume_score (mean |delta| over the case's finite D- and V-type cells),
  dose_bias and volume_bias (the same means of the signed delta = predicted - reference),
  openkbp_dose_score and openkbp_dvh_score (with a possible-dose mask)
A NaN value's note holds every reason of the case ("; "-joined: absent ROI, empty mask, ...).
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


def _row(roi: str, metric: str, unit: str, value: float, ref: float = math.nan, pred: float = math.nan) -> dict:
    return {"roi": roi, "metric": metric, "unit": unit, "reference": float(ref), "predicted": float(pred),
            "value": float(value), "note": ""}


@dataclass(frozen=True)
class CaseMetrics:
    """evaluate_case's result: the case's rows (module docstring), its notes, the gamma points evaluated."""

    rows: list[dict]
    notes: str = ""
    gamma_points: int = 0

    def row(self, roi: str, metric: str) -> dict:
        return next(r for r in self.rows if r["roi"] == roi and r["metric"] == metric)

    def value(self, roi: str, metric: str) -> float:
        return self.row(roi, metric)["value"]


def _dvh_rows(reference: np.ndarray, predicted: np.ndarray, masks: Mapping[str, np.ndarray],
              spacing_mm: Sequence[float], sets: Mapping[str, list[MetricSpec]], levels: Mapping[str, float],
              case: str | None) -> tuple[list[dict], list[str]]:
    """The rows of the configured ROI metrics and the notes of their NaN cells."""
    ref_vals, reasons = roi_metrics(reference, masks, spacing_mm, sets, levels, case)
    pred_vals, _ = roi_metrics(predicted, masks, spacing_mm, sets, levels, case)
    rows = []
    for roi, specs in sets.items():
        for spec in specs:
            r, p = ref_vals[roi][spec.text], pred_vals[roi][spec.text]
            rows.append(_row(roi, spec.text, "Gy" if spec.kind == "D" else "%", abs(r - p), r, p))
    return rows, [f"{k}: {v}" for k, v in reasons.items()]


def _score_rows(cells: list[dict]) -> list[dict]:
    """Dose and volume scores (mean |delta| over the finite D-type (Gy) and V-type (%) cells) and
    their signed counterparts (mean delta: below 0 the model under-doses or under-covers on average)."""
    rows = []
    for unit, score, bias in (("Gy", "dose_score", "dose_bias"), ("%", "volume_score", "volume_bias")):
        deltas = [d for c in cells if c["unit"] == unit and not math.isnan(d := c["predicted"] - c["reference"])]
        rows += [_row("All", score, unit, np.mean(np.abs(deltas)) if deltas else math.nan),
                 _row("All", bias, unit, np.mean(deltas) if deltas else math.nan)]
    return rows


def evaluate_case(reference: np.ndarray, predicted: np.ndarray, masks: Mapping[str, np.ndarray],
                  spacing_mm: Sequence[float], body: np.ndarray | None, prescription_gy: float | None,
                  settings: EvaluationConfig | None = None, possible_dose: np.ndarray | None = None,
                  targets: Mapping[str, float] | None = None, case: str | None = None) -> CaseMetrics:
    """All metrics of one case (see the module docstring for the rows).

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
    levels = {roi: (lvl if lvl and lvl > 0 else prescription_gy) for roi, lvl in dict(targets or {}).items()}
    img = image_metrics(reference, predicted, spacing_mm, body, cfg.c_range, cfg.ssim_sigma_mm, case)
    cells, notes = _dvh_rows(reference, predicted, masks, spacing_mm, cfg.metric_sets(list(masks), levels),
                             levels, case)
    gamma = gamma_pass_rate(reference, predicted, spacing_mm, body, cfg.gamma, case) if cfg.gamma.enabled else None
    if gamma is not None and gamma.evaluated_points == 0:
        notes.append("gamma: no reference point above the cut-off")
    rows = [_row("Body", "MAE", "Gy", img["mae"]), _row("Body", "SSIM", "", img["ssim"]),
            _row("Body", "PSNR", "dB", img["psnr"]),
            _row("Body", "gamma_pass_rate", "%", gamma.pass_rate if gamma else math.nan), *cells]
    scores = _score_rows(cells)
    if possible_dose is not None:
        kbp = evaluate_openkbp_case(reference, predicted, masks, spacing_mm, possible_dose, case)
        kbp_cells = [_row(roi, f"openkbp_{metric}", "Gy", err) for (roi, metric), err in kbp.dvh_errors.items()]
        rows += kbp_cells
        scores.append(_row("All", "openkbp_dose_score", "Gy", kbp.dose_error))
        if kbp_cells:  # the case's cells pooled, as over cases
            scores.append(_row("All", "openkbp_dvh_score", "Gy", openkbp_scores_from_rows(kbp_cells)["dvh_score"]))
        notes += [f"openkbp {n}" for n in kbp.notes]
    text = "; ".join(notes)
    for r in rows + scores:
        r["note"] = text if math.isnan(r["value"]) else ""
    return CaseMetrics(rows + scores, text, gamma.evaluated_points if gamma else 0)


def openkbp_scores_from_rows(rows: Sequence[Mapping]) -> dict[str, float]:
    """OpenKBP dose score and DVH score over cases from per-case table rows: the mean of the
    cases' openkbp_dose_score and of every finite ROI openkbp_<metric> cell, pooled."""
    errors = [float(r["value"]) for r in rows if r["metric"] == "openkbp_dose_score"]
    cells = [float(r["value"]) for r in rows if str(r["metric"]).startswith("openkbp_") and r["roi"] != "All"
             and not math.isnan(float(r["value"]))]
    return {"dose_score": float(np.mean(errors)) if errors else math.nan,
            "dvh_score": float(np.mean(cells)) if cells else math.nan}

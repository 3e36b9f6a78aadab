"""Dose-volume histograms and the dose-volume metrics read from them.

Conventions (every metric is computed from the ROI's voxel doses, not from a binned curve, so
no bin width enters a metric; each voxel whose centre is in the mask counts with its full
volume, no partial volumes):

- D_V (V in % of the ROI volume): the dose that V % of the ROI receives, i.e. the (100 - V)th
  percentile of the voxel doses with numpy's default linear interpolation between sorted
  voxel doses (OpenKBP's convention): D95 = np.percentile(d, 5), D2 = np.percentile(d, 98).
  D100 = Dmin, D0 = Dmax.
- D_xcc (absolute volume): the same percentile at 100 - 100 x / ROI volume (continuous, no
  rounding to whole voxels; OpenKBP's rounded variant lives in openkbp.py). Undefined (NaN,
  reason recorded) when the ROI is smaller than x cc.
- Dmin, Dmean, Dmax: of the voxel doses.
- V_D: % of the ROI's voxels with dose >= the threshold. The threshold is D Gy for OARs and
  D % of the target's dose level (its prescription) for targets; "V30Gy" / "V95%" force
  the unit.
- Cumulative DVH curve (for figures and comparison with a planning system): volume receiving
  at least each bin edge, edges 0, w, 2w, ... Gy (w = bin width, default 0.01 Gy).

A ROI absent from a case or an empty mask gives NaN for its metrics with the reason
recorded; a mask on another grid than the dose raises input_error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dosediff.errors import input_error

_METRIC_RE = re.compile(r"^(?P<kind>[DV])(?P<num>\d+(?:\.\d*)?|\.\d+)(?P<unit>cc|gy|%)?$", re.IGNORECASE)


@dataclass(frozen=True)
class MetricSpec:
    """One dose-volume metric as written in the config.

    kind "D" (a dose, Gy) or "V" (a volume, % of the ROI); mode for D: "percent" (value = V %),
    "cc" (value = absolute volume), "mean", "min", "max"; for V: "auto" (Gy for OARs, % of the
    dose level for targets), "gy", "percent".
    """

    text: str
    kind: str
    mode: str
    value: float = math.nan


def parse_metric(text: str, where: str = "metric") -> MetricSpec:
    """Parse "D95", "D2", "D0.1cc", "Dmean", "Dmin", "Dmax", "V95", "V30Gy", "V95%"."""
    if not isinstance(text, str):
        raise input_error(f"setting {where}", f"value {text!r}", "a metric name such as D95, Dmean, D0.1cc or V30",
                          "write the metric as a string")
    s = text.strip().replace("_", "").replace(" ", "")
    if s.lower() in ("dmean", "mean"):
        return MetricSpec(text, "D", "mean")
    if s.lower() in ("dmin", "min"):
        return MetricSpec(text, "D", "min")
    if s.lower() in ("dmax", "max"):
        return MetricSpec(text, "D", "max")
    m = _METRIC_RE.match(s)
    bad = input_error(f"setting {where}", f"value {text!r}", "one of Dmean, Dmin, Dmax, D<V%> (e.g. D95), "
                      "D<x>cc (e.g. D0.1cc), V<D> (e.g. V30: Gy for OARs, % of the prescription for targets), "
                      "V<D>Gy or V<D>%", "correct the metric name in the evaluate.metrics section of your config")
    if not m:
        raise bad
    kind, num, unit = m["kind"].upper(), float(m["num"]), (m["unit"] or "").lower()
    if kind == "D":
        if unit == "cc":
            if num <= 0:
                raise bad
            return MetricSpec(text, "D", "cc", num)
        if unit or not 0 <= num <= 100:
            raise bad
        return MetricSpec(text, "D", "percent", num)
    if unit == "cc":
        raise bad
    return MetricSpec(text, "V", {"": "auto", "gy": "gy", "%": "percent"}[unit], num)


def parse_metric_sets(sets: Mapping[str, Sequence[str]],
                      where: str = "evaluate.metrics") -> dict[str, list[MetricSpec]]:
    """{ROI: [metric strings]} -> {ROI: [MetricSpec]}, naming the bad setting on error."""
    if not isinstance(sets, Mapping):
        raise input_error(f"setting {where}", f"value {sets!r}", "a mapping ROI -> list of metrics",
                          "write e.g. {PTV: [D95, V95], Heart: [Dmean, V30]}")
    out: dict[str, list[MetricSpec]] = {}
    for roi, items in sets.items():
        if isinstance(items, str) or not isinstance(items, Sequence):
            raise input_error(f"setting {where}.{roi}", f"value {items!r}", "a list of metric names",
                              f"write e.g. {roi}: [Dmean]")
        out[str(roi)] = [parse_metric(t, f"{where}.{roi}[{i}]") for i, t in enumerate(items)]
    return out


# ---------------------------------------------------------------- metrics from voxel doses

def roi_doses(dose: np.ndarray, mask: np.ndarray, roi: str = "ROI", case: str | None = None) -> np.ndarray:
    """Voxel doses (float64, Gy) of the mask; input_error when the mask is on another grid."""
    if tuple(np.shape(mask)) != tuple(np.shape(dose)):
        raise input_error(f"mask of ROI {roi}", f"shape {tuple(np.shape(mask))} differs from the dose's "
                          f"{tuple(np.shape(dose))}", "masks on the dose grid",
                          "rasterise or resample the ROI onto the dose (CT) grid", case=case)
    return np.asarray(dose, dtype=np.float64)[np.asarray(mask).astype(bool)]


def dose_at_percent(doses: np.ndarray, v_percent: float) -> float:
    """D_V: dose received by at least v_percent % of the voxels (percentile 100 - V, linear)."""
    return float(np.percentile(doses, 100.0 - v_percent))


def dose_at_cc(doses: np.ndarray, cc: float, voxel_cc: float) -> float:
    """D_xcc: dose received by the hottest `cc` cm^3; NaN when the ROI is smaller than that."""
    roi_cc = doses.size * voxel_cc
    if cc > roi_cc:
        return math.nan
    return float(np.percentile(doses, 100.0 - 100.0 * cc / roi_cc))


def volume_at_dose(doses: np.ndarray, threshold_gy: float) -> float:
    """V_D: % of the voxels receiving at least threshold_gy."""
    return float(100.0 * np.count_nonzero(doses >= threshold_gy) / doses.size)


def metric_value(doses: np.ndarray, spec: MetricSpec, voxel_cc: float,
                 level_gy: float | None = None) -> float:
    """Value of one metric on non-empty voxel doses. level_gy: the target's dose level (None for OARs)."""
    if spec.kind == "D":
        if spec.mode == "mean":
            return float(doses.mean())
        if spec.mode == "min":
            return float(doses.min())
        if spec.mode == "max":
            return float(doses.max())
        if spec.mode == "cc":
            return dose_at_cc(doses, spec.value, voxel_cc)
        return dose_at_percent(doses, spec.value)
    percent = spec.mode == "percent" or (spec.mode == "auto" and level_gy is not None)
    if percent:
        if level_gy is None or not level_gy > 0:
            return math.nan
        return volume_at_dose(doses, spec.value / 100.0 * level_gy)
    return volume_at_dose(doses, spec.value)


def roi_metrics(dose: np.ndarray, masks: Mapping[str, np.ndarray], spacing_mm: Sequence[float],
                metric_sets: Mapping[str, Sequence[MetricSpec]],
                target_levels: Mapping[str, float | None] | None = None,
                case: str | None = None) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Metrics per ROI: ({roi: {metric text: value}}, {"roi" or "roi/metric": reason for NaN}).

    target_levels: target ROI -> its dose level in Gy (V_D of targets in % of it); ROIs not
    in it are OARs.
    """
    levels = dict(target_levels or {})
    voxel_cc = float(np.prod(spacing_mm)) / 1000.0
    values: dict[str, dict[str, float]] = {}
    reasons: dict[str, str] = {}
    for roi, specs in metric_sets.items():
        values[roi] = {s.text: math.nan for s in specs}
        if roi not in masks or masks[roi] is None:
            reasons[roi] = "ROI absent in this case"
            continue
        doses = roi_doses(dose, masks[roi], roi, case)
        if doses.size == 0:
            reasons[roi] = "empty mask"
            continue
        if not np.all(np.isfinite(doses)):
            raise input_error(f"dose in ROI {roi}", "NaN or infinite voxel doses", "finite doses in Gy",
                              "check the dose file (or the prediction) for missing values", case=case)
        level = levels.get(roi)
        if roi in levels and level is None:
            level = math.nan  # a target without a dose level: its relative V_D are undefined
        for spec in specs:
            v = metric_value(doses, spec, voxel_cc, level)
            values[roi][spec.text] = v
            if math.isnan(v):
                if spec.mode == "cc":
                    reasons[f"{roi}/{spec.text}"] = (f"ROI volume {doses.size * voxel_cc:.3g} cc is smaller "
                                                     f"than {spec.value:g} cc")
                else:
                    reasons[f"{roi}/{spec.text}"] = "target has no positive dose level (prescription)"
    return values, reasons


# ---------------------------------------------------------------- cumulative DVH curves

@dataclass(frozen=True)
class DVH:
    """Cumulative DVH: volume_cc[i] = volume receiving at least dose_gy[i] (bin edges)."""

    dose_gy: np.ndarray
    volume_cc: np.ndarray

    @property
    def total_cc(self) -> float:
        return float(self.volume_cc[0]) if self.volume_cc.size else 0.0

    @property
    def volume_percent(self) -> np.ndarray:
        total = self.total_cc
        return 100.0 * self.volume_cc / total if total > 0 else np.full_like(self.volume_cc, np.nan)


def cumulative_dvh(dose: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float],
                   bin_width_gy: float = 0.01, roi: str = "ROI", case: str | None = None) -> DVH:
    """Cumulative DVH of one ROI with bins of bin_width_gy from 0 Gy (an empty ROI gives an empty curve)."""
    doses = roi_doses(dose, mask, roi, case)
    voxel_cc = float(np.prod(spacing_mm)) / 1000.0
    if doses.size == 0:
        return DVH(np.zeros(0), np.zeros(0))
    n_bins = int(math.floor(max(doses.max(), 0.0) / bin_width_gy)) + 1
    idx = np.clip(np.floor(doses / bin_width_gy).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    cum = np.cumsum(counts[::-1])[::-1]  # voxels with dose >= each lower edge
    edges = np.arange(n_bins) * bin_width_gy
    return DVH(edges, cum * voxel_cc)

"""Clinical goals: `{ROI: {metric: "<op> <value> <unit>"}}` -> checked goals -> values and pass/fail.

A goal pairs one dose-volume metric (dosediff.metrics.dvh's names: Dmax, Dmean, Dmin, D95,
D2cc, V20Gy, V95%, ...) with a limit, e.g. `SpinalCord: {Dmax: "< 45 Gy"}` or
`PTV70: {D95: ">= 66.5 Gy", V95%: ">= 95 %"}`. The limit's unit says what is compared:

- D metrics (a dose): "Gy", or "%" of the ROI's dose level (the target's level for targets,
  the prescription for other ROIs).
- V metrics (a volume): "%" of the ROI volume, or "cc".

V<x>% thresholds are x % of the same dose level; V<x>Gy are absolute. A bare V<x> follows the
evaluation's convention (% of the level for targets, Gy for other ROIs). Metrics are computed
on the dose grid from the ROI's voxel doses with the voxel volume (dvh.py's conventions).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dosediff.errors import InputError, input_error
from dosediff.metrics.dvh import MetricSpec, metric_value, parse_metric, roi_doses

OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_LIMIT_RE = re.compile(r"^(?P<op><=|>=|<|>)\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>gy|%|cc)$", re.IGNORECASE)
_UNITS = {"D": ("Gy", "%"), "V": ("%", "cc")}

# Defaults per site. Typical published constraints (QUANTEC, Marks et al. 2010; RTOG 0615 for
# head and neck); they are a starting point: set predict.goals to your institution's protocol.
SITE_GOALS: dict[str, dict[str, dict[str, str]]] = {
    "head_and_neck": {  # OpenKBP's ROI names
        "PTV70": {"D95": ">= 66.5 Gy", "V95%": ">= 95 %", "D2": "<= 77 Gy"},
        "PTV63": {"D95": ">= 59.85 Gy", "V95%": ">= 95 %"},
        "PTV56": {"D95": ">= 53.2 Gy", "V95%": ">= 95 %"},
        "Brainstem": {"Dmax": "< 54 Gy"},
        "SpinalCord": {"Dmax": "< 45 Gy"},
        "LeftParotid": {"Dmean": "< 26 Gy"},
        "RightParotid": {"Dmean": "< 26 Gy"},
        "Larynx": {"Dmean": "< 44 Gy"},
        "Esophagus": {"Dmean": "< 34 Gy"},
        "Mandible": {"Dmax": "<= 70 Gy"},
    },
    "phantom": {  # the embedded thorax phantom, 60 Gy to the PTV
        "PTV": {"D95": ">= 57 Gy", "V95%": ">= 95 %"},
        "SpinalCord": {"Dmax": "< 45 Gy"},
        "Esophagus": {"Dmean": "< 34 Gy"},
        "Heart": {"Dmean": "< 26 Gy", "V30Gy": "< 46 %"},
        "LungL": {"V20Gy": "< 30 %", "Dmean": "< 20 Gy"},
        "LungR": {"V20Gy": "< 30 %", "Dmean": "< 20 Gy"},
    },
}
# The training dataset's name -> the site whose goals are the default for its models.
DATASET_SITES = {"openkbp": "head_and_neck", "phantom": "phantom"}


@dataclass(frozen=True)
class Goal:
    """One clinical goal: `metric op limit unit` on one ROI."""

    roi: str
    metric: MetricSpec
    op: str  # <, <=, >, >=
    limit: float
    unit: str  # Gy or % (D metrics); % or cc (V metrics)

    @property
    def text(self) -> str:
        return f"{self.metric.text.strip()} {self.op} {self.limit:g} {self.unit}"


def parse_goal(roi: str, metric: str, limit: str, where: str) -> Goal:
    """One goal from its metric name and its limit string, e.g. ("PTV", "D95", ">= 57 Gy")."""
    try:
        spec = parse_metric(metric, where)
    except InputError:
        raise input_error(f"setting {where}", f"metric {metric!r}", "Dmean, Dmin, Dmax, D<V%> (e.g. D95), D<x>cc "
                          "(e.g. D2cc), V<D>Gy (e.g. V20Gy) or V<D>% (e.g. V95%)",
                          "correct the metric name in predict.goals") from None
    text = limit.strip().replace("≤", "<=").replace("≥", ">=") if isinstance(limit, str) else None
    m = _LIMIT_RE.match(text) if text else None
    allowed = _UNITS[spec.kind]
    if not m:
        raise input_error(f"setting {where}", f"value {limit!r}",
                          f"a comparison, a number and a unit, e.g. \"< 45 Gy\" (units for {spec.kind} metrics: "
                          f"{' or '.join(allowed)})", "write the limit as a quoted string such as \">= 95 %\"")
    unit = {"gy": "Gy", "%": "%", "cc": "cc"}[m["unit"].lower()]
    if unit not in allowed:
        what = "a dose" if spec.kind == "D" else "a volume"
        raise input_error(f"setting {where}", f"unit {unit!r} for {metric!r}, which is {what}",
                          f"{' or '.join(allowed)}", f"write e.g. {metric}: \"{m['op']} {m['num']} {allowed[0]}\"")
    return Goal(roi, spec, m["op"], float(m["num"]), unit)


def parse_goals(goals: str | Mapping | None, rois: Sequence[str], where: str = "predict.goals") -> list[Goal]:
    """Goals of a site name (see SITE_GOALS) or a mapping {ROI: {metric: limit}}; every ROI must
    be one of `rois` (the model's canonical names)."""
    if goals is None:
        return []
    if isinstance(goals, str):
        if goals not in SITE_GOALS:
            raise input_error(f"setting {where}", f"value {goals!r}", f"a site from {sorted(SITE_GOALS)} or a "
                              "mapping {ROI: {metric: limit}}", "name a site or write the goals out")
        goals = SITE_GOALS[goals]
    if not isinstance(goals, Mapping):
        raise input_error(f"setting {where}", f"value {goals!r}", "a mapping {ROI: {metric: limit}}",
                          "write e.g. {SpinalCord: {Dmax: \"< 45 Gy\"}}")
    out = []
    for roi, items in goals.items():
        if roi not in rois:
            raise input_error(f"setting {where}.{roi}", f"ROI {roi!r} is not one of the model's ROIs {list(rois)}",
                              "the model's canonical ROI names", "correct the name or remove the goal")
        if not isinstance(items, Mapping) or not items:
            raise input_error(f"setting {where}.{roi}", f"value {items!r}", "a mapping {metric: limit}",
                              f"write e.g. {roi}: {{Dmax: \"< 45 Gy\"}}")
        out.extend(parse_goal(str(roi), str(k), v, f"{where}.{roi}.{k}") for k, v in items.items())
    return out


def goal_value(goal: Goal, doses: np.ndarray, voxel_mm3: float, level_gy: float | None, is_target: bool) -> float:
    """The goal's metric in the goal's unit on non-empty voxel doses (Gy); level_gy: the ROI's dose
    level (target level or prescription)."""
    spec, voxel_cc = goal.metric, voxel_mm3 / 1000.0

    relative_v = spec.kind == "V" and (spec.mode == "percent" or (spec.mode == "auto" and is_target))
    value = metric_value(doses, spec, voxel_cc, level_gy if relative_v else None)
    if goal.unit == "cc":
        return round(value / 100.0 * doses.size) * voxel_mm3 / 1000.0  # whole voxels: 61 x 100 mm^3 = 6.1 cc
    if spec.kind == "D" and goal.unit == "%":
        return 100.0 * value / level_gy if level_gy and level_gy > 0 else math.nan
    return value


def passes(goal: Goal, value: float) -> bool | None:
    """True / False, or None when the value is undefined (NaN)."""
    return None if math.isnan(value) else bool(OPERATORS[goal.op](value, goal.limit))


def evaluate_goals(goals: Sequence[Goal], dose: np.ndarray, masks: Mapping[str, np.ndarray | None],
                   spacing_mm: Sequence[float], targets: Mapping[str, float], prescription_gy: float,
                   case: str | None = None) -> list[dict]:
    """One row per goal: roi, goal, value (in the goal's unit; NaN where the ROI is absent or too
    small), unit and passed (True, False or None)."""
    voxel_mm3 = float(np.prod(spacing_mm))
    rows = []
    for goal in goals:
        mask = masks.get(goal.roi)
        doses = roi_doses(dose, mask, goal.roi, case) if mask is not None else np.zeros(0)
        level = float(targets.get(goal.roi, prescription_gy))
        value = goal_value(goal, doses, voxel_mm3, level, goal.roi in targets) if doses.size else math.nan
        rows.append({"roi": goal.roi, "goal": goal.text, "value": value, "unit": goal.unit,
                     "passed": passes(goal, value)})
    return rows

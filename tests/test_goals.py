"""Clinical goals: parsing with clear errors, and values on analytic doses known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dosediff.errors import InputError
from dosediff.goals import SITE_GOALS, evaluate_goals, parse_goal, parse_goals

ROIS = ["PTV", "Cord", "Lung"]


def rows_by_goal(rows):
    return {r["goal"]: r for r in rows}


def test_uniform_dose_every_goal_exact():
    """50 Gy everywhere in a 4x5x6 ROI of 2x3x4 mm voxels (24 mm^3 = 0.024 cc; 120 voxels = 2.88 cc)."""
    dose = np.full((4, 5, 6), 50.0, np.float32)
    mask = np.ones(dose.shape, np.uint8)
    goals = parse_goals({"PTV": {"Dmax": "<= 50 Gy", "Dmean": "> 50 Gy", "D95": ">= 95 %", "D1cc": ">= 49.9 Gy",
                                 "V80%": ">= 100 %", "V95%": "> 0 %", "V50Gy": ">= 2.88 cc"},
                         "Cord": {"Dmin": "< 50 Gy", "V20Gy": "< 50 %"}}, ROIS)
    rows = rows_by_goal(evaluate_goals(goals, dose, {"PTV": mask, "Cord": mask}, (2.0, 3.0, 4.0),
                                       {"PTV": 60.0}, 60.0))
    expected = {  # goal: (value, passed)
        "Dmax <= 50 Gy": (50.0, True), "Dmean > 50 Gy": (50.0, False),
        "D95 >= 95 %": (100 * 50 / 60, False),  # 83.3 % of the PTV's 60 Gy
        "D1cc >= 49.9 Gy": (50.0, True),
        "V80% >= 100 %": (100.0, True),  # 48 Gy threshold: all of it
        "V95% > 0 %": (0.0, False),  # 57 Gy threshold: none
        "V50Gy >= 2.88 cc": (2.88, True),  # V at exactly the dose counts (>=)
        "Dmin < 50 Gy": (50.0, False), "V20Gy < 50 %": (100.0, False),
    }
    assert set(rows) == set(expected)
    for text, (value, passed) in expected.items():
        assert rows[text]["value"] == pytest.approx(value, rel=1e-12), text
        assert rows[text]["passed"] is passed, text


def test_linear_ramp_every_goal_exact():
    """Doses 0, 0.5, ..., 50 Gy along x (101 voxels of 10x10x1 mm = 0.1 cc; ROI 10.1 cc).

    With linear interpolation between sorted voxel doses, the p-th percentile of equally
    spaced doses is exactly p % of 50 Gy, so D_V = (100 - V) % x 50 Gy; V_D counts voxels."""
    dose = (np.arange(101, dtype=np.float64) * 0.5).reshape(1, 1, 101)
    mask = np.ones(dose.shape, np.uint8)
    goals = parse_goals({"PTV": {"D95": ">= 2 Gy", "D2": "<= 49 Gy", "Dmean": "< 25 Gy", "Dmax": "< 50 Gy",
                                 "D2cc": ">= 40 Gy", "V95%": ">= 25 %", "V95 ": "> 24 %"},
                         "Lung": {"V20Gy": "< 60.4 %", "V20": "<= 6.1 cc", "D0.5cc": ">= 47.5 Gy",
                                  "V95%": "< 24.7525 %", "Dmean": "<= 50 %"}}, ROIS)
    spacing = (10.0, 10.0, 1.0)
    rows = rows_by_goal(evaluate_goals(goals, dose, {"PTV": mask, "Lung": mask}, spacing, {"PTV": 40.0}, 40.0))
    roi_cc = 10.1
    expected = {
        "D95 >= 2 Gy": (2.5, True),  # 5th percentile
        "D2 <= 49 Gy": (49.0, True),  # 98th percentile
        "Dmean < 25 Gy": (25.0, False),
        "Dmax < 50 Gy": (50.0, False),
        "D2cc >= 40 Gy": (50.0 * (1 - 2.0 / roi_cc), True),  # percentile 100 - 100 x 2 / 10.1
        "V95% >= 25 %": (100 * 25 / 101, False),  # 38 Gy = 95 % of 40: voxels 76..100
        "V95 > 24 %": (100 * 25 / 101, True),  # bare V on a target: % of its level
        "V20Gy < 60.4 %": (100 * 61 / 101, True),  # >= 20 Gy: voxels 40..100
        "V20 <= 6.1 cc": (6.1, True),  # bare V on an OAR: Gy; 61 voxels x 0.1 cc
        "D0.5cc >= 47.5 Gy": (50.0 * (1 - 0.5 / roi_cc), True),
        "V95% < 24.7525 %": (100 * 25 / 101, True),  # OAR: % of the prescription (40 Gy)
        "Dmean <= 50 %": (100 * 25 / 40, False),  # 62.5 % of the 40 Gy prescription
    }
    assert set(rows) == set(expected)
    for text, (value, passed) in expected.items():
        assert rows[text]["value"] == pytest.approx(value, rel=1e-12), text
        assert rows[text]["passed"] is passed, text


def test_absent_roi_and_too_small_volume_are_undefined():
    dose = np.ones((2, 2, 2))
    goals = parse_goals({"PTV": {"D10cc": ">= 1 Gy"}, "Cord": {"Dmax": "< 45 Gy"}}, ROIS)
    rows = evaluate_goals(goals, dose, {"PTV": np.ones((2, 2, 2))}, (1, 1, 1), {"PTV": 1.0}, 1.0)
    assert all(math.isnan(r["value"]) and r["passed"] is None for r in rows)


@pytest.mark.parametrize("goals, message", [
    ({"Brain": {"Dmax": "< 45 Gy"}}, r"predict\.goals\.Brain: ROI 'Brain' is not one of the model's ROIs"),
    ({"Cord": {"Dmax": "45 Gy"}}, r"predict\.goals\.Cord\.Dmax: value '45 Gy'; expected a comparison"),
    ({"Cord": {"Dmax": "< 45"}}, r"value '< 45'; expected a comparison, a number and a unit"),
    ({"Cord": {"Dmax": "< 45 %%"}}, r"value '< 45 %%'"),
    ({"Cord": {"Dmax": 45}}, r"value 45; expected a comparison"),
    ({"Cord": {"Dmax": "< 45 cc"}}, r"unit 'cc' for 'Dmax', which is a dose; expected Gy or %"),
    ({"Cord": {"V20Gy": "< 30 Gy"}}, r"unit 'Gy' for 'V20Gy', which is a volume; expected % or cc"),
    ({"Cord": {"Dfoo": "< 45 Gy"}},
     r"predict\.goals\.Cord\.Dfoo: metric 'Dfoo'; expected Dmean, .*Fix: correct the metric name in predict.goals"),
    ({"Cord": {"D120": "< 45 Gy"}}, r"metric 'D120'"),
    ({"Cord": "Dmax < 45"}, r"predict\.goals\.Cord: value 'Dmax < 45'; expected a mapping"),
    ("liver", r"value 'liver'; expected a site from"),
    ([1, 2], r"expected a mapping"),
])
def test_bad_goals_name_the_setting_and_the_fix(goals, message):
    with pytest.raises(InputError, match=message) as err:
        parse_goals(goals, ROIS)
    assert "Fix:" in str(err.value)


def test_site_defaults_parse_on_their_rois():
    from dosediff.config import load_settings
    from dosediff.phantom import ROI_NAMES

    openkbp_rois = load_settings("config/openkbp.yaml")["dataset"]["rois"]
    assert len(parse_goals("head_and_neck", openkbp_rois)) == sum(map(len, SITE_GOALS["head_and_neck"].values()))
    assert len(parse_goals("phantom", ROI_NAMES)) == sum(map(len, SITE_GOALS["phantom"].values()))
    assert parse_goal("X", "V95%", "≥ 95 %", "g").text == "V95% >= 95 %"

"""DVH and dose-volume metrics: analytic doses, hand-computed percentiles, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dosediff.config import from_dict
from dosediff.errors import InputError
from dosediff.metrics.dvh import (
    cumulative_dvh, dose_at_cc, dose_at_percent, parse_metric, parse_metric_sets, roi_metrics, volume_at_dose,
)
from dosediff.metrics.evaluate import EvaluationConfig, evaluate_case
from dvh_helpers import curve_dose_at_percent, curve_mean_gy


def test_uniform_dose_gives_a_step_dvh() -> None:
    dose = np.zeros((10, 12, 14), np.float32)
    mask = np.zeros(dose.shape, np.uint8)
    mask[2:8, 3:9, 4:10] = 1
    dose[mask > 0] = 50.0
    spacing = (2.0, 2.5, 2.5)  # 12.5 mm^3 per voxel
    d = dose[mask > 0].astype(float)
    for v in (0, 1, 2, 50, 95, 98, 100):
        assert dose_at_percent(d, v) == 50.0
    assert volume_at_dose(d, 49.99) == 100.0 and volume_at_dose(d, 50.0) == 100.0
    assert volume_at_dose(d, 50.01) == 0.0
    curve = cumulative_dvh(dose, mask, spacing, bin_width_gy=0.01)
    total_cc = 216 * 12.5 / 1000
    assert curve.total_cc == pytest.approx(total_cc)
    below, above = curve.dose_gy <= 50.0, curve.dose_gy > 50.0 + 1e-9
    np.testing.assert_allclose(curve.volume_cc[below], total_cc)
    assert not above.any() or np.all(curve.volume_cc[above] == 0)
    assert curve.dose_gy[-1] == pytest.approx(50.0)
    assert curve_dose_at_percent(curve, 95) == pytest.approx(50.0)
    assert curve_mean_gy(curve) == pytest.approx(50.0, abs=0.01)
    specs = parse_metric_sets({"PTV": ["D95", "D2", "Dmin", "Dmean", "Dmax", "V95", "V105"]})
    vals, reasons = roi_metrics(dose, {"PTV": mask}, spacing, specs, {"PTV": 50.0})
    assert vals["PTV"] == {"D95": 50.0, "D2": 50.0, "Dmin": 50.0, "Dmean": 50.0, "Dmax": 50.0,
                           "V95": 100.0, "V105": 0.0}
    assert reasons == {}


def test_percentile_convention_by_hand() -> None:
    # Doses 1..100 Gy, one voxel each of 1 cc (10 mm cubes). D_V is the (100 - V)th percentile with
    # linear interpolation between sorted doses at position (n - 1) q / 100.
    d = np.arange(1.0, 101.0)
    rng = np.random.default_rng(0)
    rng.shuffle(d)
    assert dose_at_percent(d, 95) == pytest.approx(1 + 99 * 0.05)  # 5.95
    assert dose_at_percent(d, 2) == pytest.approx(1 + 99 * 0.98)  # 98.02
    assert dose_at_cc(d, 2.0, 1.0) == pytest.approx(1 + 99 * 0.98)  # 2 cc of 100 cc = 2 %
    assert dose_at_cc(d, 0.1, 1.0) == pytest.approx(1 + 99 * 0.999)
    assert math.isnan(dose_at_cc(d, 101.0, 1.0))
    assert volume_at_dose(d, 30.0) == 71.0  # 30..100 Gy
    dose = np.zeros((5, 5, 4))
    dose.flat[:] = d
    mask = np.ones(dose.shape, np.uint8)
    specs = parse_metric_sets({"Cord": ["D0.1cc", "D200cc", "V30", "V30Gy", "V50%"]})
    vals, reasons = roi_metrics(dose, {"Cord": mask}, (10.0, 10.0, 10.0), specs, target_levels={})
    assert vals["Cord"]["V30"] == 71.0 and vals["Cord"]["V30Gy"] == 71.0
    assert math.isnan(vals["Cord"]["D200cc"]) and "smaller than 200 cc" in reasons["Cord/D200cc"]
    assert math.isnan(vals["Cord"]["V50%"]) and "prescription" in reasons["Cord/V50%"]
    # The same V95 on a target means 95 % of its dose level: 0.95 * 80 = 76 Gy -> 76..100 = 25 voxels.
    vals, _ = roi_metrics(dose, {"PTV": mask}, (10.0, 10.0, 10.0), parse_metric_sets({"PTV": ["V95"]}), {"PTV": 80.0})
    assert vals["PTV"]["V95"] == 25.0
    # A target without a dose level: relative V_D is NaN with the reason, never read as Gy.
    vals, reasons = roi_metrics(dose, {"PTV": mask}, (10.0, 10.0, 10.0), parse_metric_sets({"PTV": ["V95"]}),
                                {"PTV": None})
    assert math.isnan(vals["PTV"]["V95"]) and "prescription" in reasons["PTV/V95"]


def test_dvh_curve_against_direct_counts() -> None:
    rng = np.random.default_rng(1)
    dose = rng.uniform(0, 20, (8, 9, 10))
    mask = (rng.random(dose.shape) < 0.4).astype(np.uint8)
    curve = cumulative_dvh(dose, mask, (2.0, 2.0, 2.0), bin_width_gy=0.5)
    d = dose[mask > 0]
    for edge, vol in zip(curve.dose_gy, curve.volume_cc):
        assert vol == pytest.approx(np.count_nonzero(d >= edge) * 0.008)
    assert curve_mean_gy(curve) == pytest.approx(d.mean(), abs=0.25)  # within half a bin


def test_absent_roi_empty_mask_and_wrong_grid() -> None:
    dose = np.ones((4, 5, 6))
    specs = parse_metric_sets({"Heart": ["Dmean"], "Lung": ["Dmean", "V20"]})
    vals, reasons = roi_metrics(dose, {"Lung": np.zeros(dose.shape, np.uint8)}, (1, 1, 1), specs)
    assert math.isnan(vals["Heart"]["Dmean"]) and reasons["Heart"] == "ROI absent in this case"
    assert math.isnan(vals["Lung"]["V20"]) and reasons["Lung"] == "empty mask"
    with pytest.raises(InputError, match=r"ROI Lung.*\(4, 5, 5\).*\(4, 5, 6\)"):
        roi_metrics(dose, {"Lung": np.ones((4, 5, 5), np.uint8)}, (1, 1, 1), specs, case="pt_1")


def test_metric_parser() -> None:
    assert parse_metric("D95").mode == "percent" and parse_metric("D95").value == 95
    assert parse_metric("D0.1cc").mode == "cc" and parse_metric("D0.1cc").value == 0.1
    assert parse_metric("D_0.1_cc").mode == "cc"
    assert parse_metric("Dmean").mode == "mean" and parse_metric("Dmax").mode == "max"
    assert parse_metric("V30").mode == "auto" and parse_metric("V30Gy").mode == "gy"
    assert parse_metric("V95%").mode == "percent"
    for bad in ("D101", "Dx", "X95", "D0cc", "V20cc", "D95Gy", "", "Dmedian"):
        with pytest.raises(InputError, match="evaluate.metrics.PTV"):
            parse_metric(bad, "evaluate.metrics.PTV[0]")
    with pytest.raises(InputError, match=r"evaluate\.metrics\.PTV\[1\]"):
        from_dict(EvaluationConfig, {"metrics": {"PTV": ["D95", "D95x"]}}, "evaluate")
    with pytest.raises(InputError, match="evaluate.metrics.Heart"):
        from_dict(EvaluationConfig, {"metrics": {"Heart": "Dmean"}}, "evaluate")
    cfg = from_dict(EvaluationConfig, {"c_range": 80, "metrics": {"PTV": ["D95"]},
                                       "gamma": {"distance_mm": 2, "max_points": 1000}}, "evaluate")
    assert cfg.c_range == 80.0 and cfg.gamma.distance_mm == 2.0 and cfg.gamma.max_points == 1000


def test_evaluate_case_scores() -> None:
    shape, spacing = (12, 16, 16), (3.0, 2.5, 2.5)
    zz, yy, xx = np.indices(shape)
    ref = (60.0 * np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 40.0) * np.ones(shape)).astype(np.float32)
    body = np.ones(shape, np.uint8)
    ptv = ((yy - 8) ** 2 + (xx - 8) ** 2 <= 6).astype(np.uint8)
    heart = ((yy - 3) ** 2 + (xx - 12) ** 2 <= 4).astype(np.uint8)
    masks = {"PTV": ptv, "Heart": heart, "Empty": np.zeros(shape, np.uint8)}
    pred = ref * 0.97
    cfg = EvaluationConfig(metrics={"PTV": ["D95", "V95"], "Heart": ["Dmean", "V10"], "Cord": ["Dmax"],
                                    "Empty": ["Dmax"]})
    row = evaluate_case(ref, pred, masks, spacing, body, 60.0, cfg, targets={"PTV": 0.0}, case="c1")
    d_ptv, d_heart = ref[ptv > 0].astype(float), ref[heart > 0].astype(float)
    p_ptv, p_heart = pred[ptv > 0].astype(float), pred[heart > 0].astype(float)
    dd = [abs(np.percentile(d_ptv, 5) - np.percentile(p_ptv, 5)), abs(d_heart.mean() - p_heart.mean())]
    dv = [abs(100 * np.mean(d_ptv >= 57.0) - 100 * np.mean(p_ptv >= 57.0)),
          abs(100 * np.mean(d_heart >= 10.0) - 100 * np.mean(p_heart >= 10.0))]
    assert row.value("All", "dose_score") == pytest.approx(np.mean(dd), rel=1e-6)
    assert row.value("All", "volume_score") == pytest.approx(np.mean(dv), rel=1e-9)
    assert row.value("Body", "MAE") == pytest.approx(np.mean(np.abs(ref.astype(float) - pred)), rel=1e-5)
    assert math.isnan(row.value("Cord", "Dmax")) and math.isnan(row.row("Empty", "Dmax")["reference"])
    assert "Cord: ROI absent in this case" in row.notes and "Empty: empty mask" in row.notes
    assert 0 <= row.value("Body", "gamma_pass_rate") <= 100 and row.gamma_points > 0
    same = evaluate_case(ref, ref.copy(), masks, spacing, body, 60.0, cfg, targets={"PTV": 0.0})
    assert same.value("All", "dose_score") == 0 and same.value("All", "volume_score") == 0
    assert same.value("Body", "PSNR") == math.inf
    assert same.value("Body", "SSIM") == pytest.approx(1.0) and same.value("Body", "gamma_pass_rate") == 100.0
    with pytest.raises(InputError, match=r"case c1: predicted dose: shape \(12, 16, 15\) differs.*\(12, 16, 16\)"):
        evaluate_case(ref, pred[..., :15], masks, spacing, body, 60.0, cfg, case="c1")
    with pytest.raises(InputError, match="NaN"):
        bad = pred.copy()
        bad[0, 0, 0] = np.nan
        evaluate_case(ref, bad, masks, spacing, body, 60.0, cfg)
    # Default metric sets: by ROI kind.
    row = evaluate_case(ref, pred, {"PTV": ptv, "Heart": heart}, spacing, body, 60.0,
                        EvaluationConfig(gamma=from_dict(type(cfg.gamma), {"enabled": False}, "g")),
                        targets={"PTV": 60.0})
    assert {("PTV", "D95"), ("PTV", "V95"), ("Heart", "Dmean"), ("Heart", "Dmax")} <= {(r["roi"], r["metric"])
                                                                                      for r in row.rows}

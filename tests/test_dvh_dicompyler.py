"""DVHs of the dicompyler example plan against dicompyler-core's reference and the planning
system's own DVHs embedded in rtdose.dcm.

ROIs are rasterised on the RTDOSE grid (voxel centres, even-odd rule, each contour on its
nearest dose plane). The planning system (Eclipse) wrote DVHData in Gy but the statistics
(DVHMinimum/Mean/MaximumDose) in % of the 14 Gy prescription of rtplan.dcm; the test reads the
prescription from the plan and converts. Run with -s to see the table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dosediff.io.rtstruct import rasterize_roi
from dosediff.metrics.dvh import dose_at_percent, roi_doses
from dicom_readers import read_rtdose, read_rtstruct
from dvh_helpers import curve_dose_at_percent, curve_mean_gy, read_embedded_dvhs

EXPECTED_CHECKED = {"Breast", "Heart", "Lt Lung", "Tumor Bed", "Tumor Bed Block"}


def plan_prescription_gy(path: Path) -> float:
    plan = pydicom.dcmread(str(path))
    doses = [float(r.TargetPrescriptionDose) for r in plan.DoseReferenceSequence
             if r.get("DoseReferenceStructureType") == "SITE" and r.get("TargetPrescriptionDose") is not None]
    assert len(doses) == 1
    return doses[0]


@pytest.fixture(scope="module")
def plan(dicompyler_dir: Path) -> dict:
    dose, geometry, _ = read_rtdose(dicompyler_dir / "rtdose.dcm", "dicompyler")
    contours, _ = read_rtstruct(dicompyler_dir / "rtss.dcm", "dicompyler")
    rx = plan_prescription_gy(dicompyler_dir / "rtplan.dcm")
    tps = {e.roi_name: e for e in read_embedded_dvhs(dicompyler_dir / "rtdose.dcm", dicompyler_dir / "rtss.dcm",
                                                     stats_percent_of_gy=rx).values()}
    voxel_cc = float(np.prod(geometry.spacing)) / 1000
    lo = np.asarray(geometry.index_to_world(np.zeros(3)))
    hi = np.asarray(geometry.index_to_world(np.asarray(geometry.shape, float) - 1))
    ours = {}
    for name, cs in contours.items():
        d = roi_doses(dose, rasterize_roi(cs, geometry), name)
        pts = np.concatenate(cs) if cs else np.zeros((0, 3))
        inside = bool(len(pts)) and bool(np.all(pts >= np.minimum(lo, hi)) and np.all(pts <= np.maximum(lo, hi)))
        ours[name] = {"doses": d, "volume": d.size * voxel_cc, "inside": inside}
    return {"ours": ours, "tps": tps, "rx": rx}


def test_heart_matches_dicompyler_core(plan: dict) -> None:
    heart = plan["ours"]["Heart"]
    assert heart["doses"].mean() == pytest.approx(0.6475, rel=0.01)
    assert heart["volume"] == pytest.approx(440.2, rel=0.02)


def test_rois_match_the_planning_system(plan: dict) -> None:
    ours, tps = plan["ours"], plan["tps"]
    lines = [f"\n{'ROI':16s} {'vol cc':>9s} {'TPS':>9s} {'d%':>6s} | {'mean Gy':>8s} {'TPS':>8s} {'d%':>6s} | "
             f"{'D95 Gy':>7s} {'TPS':>7s} {'dGy':>6s} | checked"]
    checked = set()
    for name, o in ours.items():
        t = tps.get(name)
        if o["doses"].size == 0 or t is None:
            lines.append(f"{name:16s} {'(no voxels on the dose grid or no TPS DVH)':>40s}")
            continue
        mean, d95 = float(o["doses"].mean()), dose_at_percent(o["doses"], 95)
        t_vol, t_mean, t_d95 = t.curve.total_cc, t.mean_gy, curve_dose_at_percent(t.curve, 95)
        check = o["volume"] >= 10.0 and o["inside"]
        lines.append(f"{name:16s} {o['volume']:9.2f} {t_vol:9.2f} {100 * (o['volume'] / t_vol - 1):+6.2f} | "
                     f"{mean:8.4f} {t_mean:8.4f} {100 * (mean / t_mean - 1):+6.2f} | "
                     f"{d95:7.3f} {t_d95:7.3f} {d95 - t_d95:+6.3f} | {'yes' if check else 'no'}")
        if check:
            checked.add(name)
            assert o["volume"] == pytest.approx(t_vol, rel=0.03), name
            assert mean == pytest.approx(t_mean, rel=0.02), name
            assert abs(d95 - t_d95) <= 0.1, name
    print("\n".join(lines))
    assert checked == EXPECTED_CHECKED


def test_relative_statistics_are_flagged(dicompyler_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        raw = read_embedded_dvhs(dicompyler_dir / "rtdose.dcm")
    assert "stats_percent_of_gy" in caplog.text
    heart = raw[5]  # Heart is ROI number 5 in rtss.dcm
    assert heart.mean_gy == pytest.approx(4.6254, rel=1e-4)  # % of 14 Gy as stored
    # The curve itself is in Gy (read as stored, no conversion).
    assert curve_mean_gy(heart.curve) == pytest.approx(0.6475, rel=0.01)

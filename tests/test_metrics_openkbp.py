"""OpenKBP dose score and DVH score against an independent computation from the definitions.

The reference computation below reads the sparse CSVs itself (float64, like the official
loader), sorts voxel doses and interpolates percentiles by hand, and sums with math.fsum: a
different code path from dosediff.metrics.openkbp (np.percentile, numpy sums).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from dosediff.metrics.evaluate import EvaluationConfig, evaluate_case, openkbp_scores_from_rows
from dosediff.metrics.gamma import GammaConfig
from dosediff.metrics.openkbp import (
    OPENKBP_OARS, OPENKBP_TARGETS, OpenKBPCase, dvh_metrics, evaluate_openkbp_case, voxels_in_tenth_cc,
)

PATIENTS = ("pt_201", "pt_204", "pt_210")
N = 128


def read_sparse(path: Path, mask: bool) -> np.ndarray:
    df = pd.read_csv(path, index_col=0)
    flat = np.zeros(N**3)
    flat[df.index.to_numpy()] = 1.0 if mask else df["data"].to_numpy(dtype=np.float64)
    return flat.reshape(N, N, N)


def load_patient(folder: Path) -> dict:
    files = {p.name.split(".")[0]: p for p in folder.iterdir()}
    rois = {r: read_sparse(files[r], True).astype(bool) for r in (*OPENKBP_OARS, *OPENKBP_TARGETS) if r in files}
    return {
        "dose": read_sparse(files["dose"], False),
        "possible": read_sparse(files["possible_dose_mask"], True).astype(bool),
        "dims": np.loadtxt(files["voxel_dimensions"]),
        "rois": rois,
    }


def perturb(dose: np.ndarray, possible: np.ndarray, seed: int) -> np.ndarray:
    """Reference times a smooth +-5 % field plus a smooth +-1 Gy field, 0 outside possible_dose_mask."""
    rng = np.random.default_rng(seed)
    fields = []
    for sigma in (10.0, 5.0):
        f = ndimage.gaussian_filter(rng.standard_normal(dose.shape), sigma)
        fields.append(f / np.abs(f).max())
    pred = np.clip(dose * (1 + 0.05 * fields[0]) + 1.0 * fields[1], 0, None)
    return np.where(possible, pred, 0.0)


def percentile_by_hand(values: np.ndarray, q: float) -> float:
    s = sorted(values.tolist())
    pos = q / 100 * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def reference_cells(dose: np.ndarray, rois: dict, dims: np.ndarray) -> dict:
    voxel_mm3 = dims[0] * dims[1] * dims[2]
    n_tenth = max(1, round(100 / voxel_mm3))
    out = {}
    for roi, mask in rois.items():
        d = dose[mask]
        if roi in OPENKBP_OARS:
            out[(roi, "D_0.1_cc")] = percentile_by_hand(d, 100 - n_tenth / d.size * 100)
            out[(roi, "mean")] = math.fsum(d.tolist()) / d.size
        else:
            for name, q in (("D_99", 1), ("D_95", 5), ("D_1", 99)):
                out[(roi, name)] = percentile_by_hand(d, q)
    return out


@pytest.fixture(scope="module")
def patients(openkbp_dir: Path) -> list[dict]:
    out = []
    for i, pid in enumerate(PATIENTS):
        folder = openkbp_dir / "validation-pats" / pid
        if not folder.is_dir():
            pytest.skip(f"{folder} not found")
        p = load_patient(folder)
        p["id"], p["pred"] = pid, perturb(p["dose"], p["possible"], seed=i)
        out.append(p)
    return out


def openkbp_scores(cases: Iterable[OpenKBPCase]) -> dict[str, float]:
    """{"dose_score", "dvh_score"} (Gy) over patients from their OpenKBPCase results: mean dose error;
    mean of all DVH cells (the package pools per-case table rows: openkbp_scores_from_rows)."""
    cases = list(cases)
    errors = [c.dose_error for c in cases]
    cells = [v for c in cases for v in c.dvh_errors.values()]
    return {
        "dose_score": float(np.mean(errors)) if errors else math.nan,
        "dvh_score": float(np.nanmean(cells)) if cells else math.nan,
    }


def test_scores_match_the_definitions(patients: list[dict]) -> None:
    dose_errors, cells = [], []
    ours = []
    for p in patients:
        ref, pred = p["dose"], p["pred"]
        dose_errors.append(math.fsum(np.abs(ref - pred).ravel().tolist()) / int(p["possible"].sum()))
        r = reference_cells(ref, p["rois"], p["dims"])
        q = reference_cells(pred, p["rois"], p["dims"])
        cells += [abs(r[k] - q[k]) for k in r]
        res = evaluate_openkbp_case(ref, pred, p["rois"], tuple(p["dims"]), p["possible"], case=p["id"])
        assert set(res.reference) == set(r)
        for k in r:
            assert res.reference[k] == pytest.approx(r[k], abs=1e-9)
            assert res.predicted[k] == pytest.approx(q[k], abs=1e-9)
        ours.append(res)
    expected_dose, expected_dvh = sum(dose_errors) / len(dose_errors), math.fsum(cells) / len(cells)
    scores = openkbp_scores(ours)
    print(f"\nOpenKBP on {', '.join(PATIENTS)}: dose score {scores['dose_score']:.6f} "
          f"(independent {expected_dose:.6f}), DVH score {scores['dvh_score']:.6f} "
          f"(independent {expected_dvh:.6f}), {len(cells)} DVH cells")
    assert abs(scores["dose_score"] - expected_dose) < 1e-6
    assert abs(scores["dvh_score"] - expected_dvh) < 1e-6
    # A perturbation this size must give non-trivial scores (the test can fail).
    assert 0.1 < expected_dose < 5 and 0.1 < expected_dvh < 5
    # The same numbers through evaluate_case rows (gamma off: not needed here).
    cfg = EvaluationConfig(gamma=GammaConfig(enabled=False))
    rows = [evaluate_case(p["dose"], p["pred"], p["rois"], tuple(p["dims"]), p["possible"], 70.0, cfg,
                          possible_dose=p["possible"], case=p["id"]) for p in patients]
    via_rows = openkbp_scores_from_rows([r for m in rows for r in m.rows])
    assert abs(via_rows["dose_score"] - expected_dose) < 1e-6
    assert abs(via_rows["dvh_score"] - expected_dvh) < 1e-6


def test_tenth_cc_voxel_count_and_small_rois() -> None:
    assert voxels_in_tenth_cc((3.906, 3.906, 2.5)) == 3  # 38.1 mm^3 -> 2.62 -> 3 voxels
    assert voxels_in_tenth_cc((5.422, 5.422, 3.0)) == 1  # 88.2 mm^3 -> 1.13 -> 1 voxel
    assert voxels_in_tenth_cc((10.0, 10.0, 10.0)) == 1  # max(1, round(0.1)) = 1
    assert voxels_in_tenth_cc((1.0, 1.0, 1.0)) == 100
    dose = np.arange(64, dtype=float).reshape(4, 4, 4)
    mask = np.zeros(dose.shape, bool)
    mask.flat[[3, 10, 20, 63]] = True  # doses 3, 10, 20, 63
    notes: list[str] = []
    m = dvh_metrics(dose, {"Larynx": mask}, (3.906, 3.906, 2.5), notes=notes)
    # n = 3 of 4 voxels: percentile 100 - 75 = 25 -> position 0.75 between 3 and 10 Gy (not the
    # 3rd-hottest voxel's 10 Gy: the official convention interpolates).
    assert m[("Larynx", "D_0.1_cc")] == pytest.approx(8.25)
    assert m[("Larynx", "mean")] == pytest.approx(24.0)
    m = dvh_metrics(dose, {"Larynx": mask}, (1.0, 1.0, 1.0), notes=notes)
    assert m[("Larynx", "D_0.1_cc")] == 3.0 and "D_0.1_cc taken as the minimum" in notes[0]
    # Unknown ROI names and empty masks give no cells.
    assert dvh_metrics(dose, {"Heart": mask, "PTV70": np.zeros(dose.shape, bool)}, (1, 1, 1)) == {}

"""Time every metric of one OpenKBP case (128^3, 10 ROIs, gamma included) on one core.

    python benchmarks/bench_metrics.py [--case-dir ../shared/data/openkbp/validation-pats/pt_201]

Prediction = reference x (1 + smooth field of sd 8 %) + smooth field of sd 2 Gy (seeded),
0 outside the possible-dose mask: an OpenKBP dose error of about 1.4 Gy on pt_201, the order of
the challenge's entries (a near-perfect prediction would flatter gamma, whose cost grows with
the number of failing points). Body = CT > -500 HU. Prints seconds per part and the total of
evaluate_case (image metrics, per-ROI metrics and scores, gamma, OpenKBP metrics) plus the
DVH curves of both doses; target <= 10 s.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from dosediff.config import DatasetConfig  # noqa: E402
from dosediff.io.openkbp import read_openkbp_case  # noqa: E402
from dosediff.metrics.dvh import cumulative_dvh, parse_metric_sets, roi_metrics  # noqa: E402
from dosediff.metrics.evaluate import EvaluationConfig, evaluate_case  # noqa: E402
from dosediff.metrics.gamma import gamma_pass_rate  # noqa: E402
from dosediff.metrics.image import image_metrics  # noqa: E402
from dosediff.metrics.openkbp import evaluate_openkbp_case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ROIS = ["PTV70", "PTV63", "PTV56", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid",
        "Esophagus", "Larynx", "Mandible"]
TARGETS = {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}
METRICS = {**{t: ["D99", "D95", "D1", "Dmean", "V95"] for t in TARGETS},
           **{o: ["D0.1cc", "Dmean", "Dmax", "V30"] for o in ROIS if o not in TARGETS}}


def perturbed(dose: np.ndarray, possible: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f1, f2 = (ndimage.gaussian_filter(rng.standard_normal(dose.shape), s) for s in (10.0, 5.0))
    # Standardised fields: about +-8 % and +-2 Gy (1 sd), a prediction of leaderboard-like error.
    pred = dose * (1 + 0.08 * f1 / f1.std()) + 2.0 * f2 / f2.std()
    return np.where(possible > 0, np.clip(pred, 0, None), 0).astype(np.float32)


def timed(label: str, fn, times: dict):
    t0 = time.perf_counter()
    out = fn()
    times[label] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case-dir", type=Path, default=REPO.parent / "shared/data/openkbp/validation-pats/pt_201")
    args = ap.parse_args()
    dataset = DatasetConfig(name="openkbp", source="openkbp", rois=ROIS, targets=TARGETS, prescription_gy=70.0)
    case = read_openkbp_case(args.case_dir, args.case_dir.name, dataset)
    ref, sp = case.dose, case.geometry.spacing
    pred = perturbed(ref, case.possible_dose)
    body = case.ct > -500
    cfg = EvaluationConfig(metrics=METRICS)
    print(f"case {case.case_id}: shape {ref.shape}, spacing {sp} mm, {len(case.masks)} ROIs, "
          f"{int(body.sum())} body voxels, threads {os.environ['OMP_NUM_THREADS']}")

    parts: dict[str, float] = {}
    img = timed("image metrics (MAE, PSNR, SSIM)", lambda: image_metrics(ref, pred, sp, body), parts)
    sets = parse_metric_sets(METRICS)
    timed("ROI metrics (ref + pred)", lambda: [roi_metrics(d, case.masks, sp, sets, TARGETS) for d in (ref, pred)],
          parts)
    gam = timed("gamma 3%/3mm (incl. pymedphys import)", lambda: gamma_pass_rate(ref, pred, sp, body, cfg.gamma), parts)
    kbp = timed("OpenKBP dose + DVH metrics",
                lambda: evaluate_openkbp_case(ref, pred, case.masks, sp, case.possible_dose), parts)
    strict = dataclasses.replace(cfg.gamma, skip_once_passed=False, max_gamma=2.0)
    full = timed("  (gamma without early stop, mg 2)", lambda: gamma_pass_rate(ref, pred, sp, body, strict), parts)
    for label, secs in parts.items():
        print(f"  {label:40s} {secs:6.2f} s")

    total: dict[str, float] = {}
    row = timed("evaluate_case", lambda: evaluate_case(ref, pred, case.masks, sp, body, 70.0, cfg,
                                                       possible_dose=case.possible_dose, targets=TARGETS), total)
    timed("DVH curves (ref + pred, 0.01 Gy)", lambda: [cumulative_dvh(d, m, sp, cfg.dvh_bin_gy, r)
                                                       for d in (ref, pred) for r, m in case.masks.items()
                                                       if m is not None and np.any(m)], total)
    for label, secs in total.items():
        print(f"  {label:40s} {secs:6.2f} s")
    print(f"TOTAL all metrics of one case: {sum(total.values()):.2f} s (target <= 10 s)")
    print(f"  MAE {img['mae']:.3f} Gy, PSNR {img['psnr']:.2f} dB, SSIM {img['ssim']:.4f}; "
          f"dose score {row.value('All', 'dose_score'):.3f} Gy, volume score {row.value('All', 'volume_score'):.3f} %; "
          f"gamma {gam.pass_rate:.2f} % of {gam.evaluated_points} points (without early stop: {full.pass_rate:.2f} %); "
          f"OpenKBP dose error {kbp.dose_error:.3f} Gy")


if __name__ == "__main__":
    main()

"""Signed mean errors beside absolute ones: a case the prediction over-doses in one ROI and
under-doses (and under-covers) in another must show those signs in every table, from
evaluate_case through the per-case, summary, per-ROI and comparison tables to the files of
the report folder. The expected values are worked out by hand from the uniform doses below."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dosediff.config import ReportConfig
from dosediff.evaluate import COLUMNS, long_rows
from dosediff.metrics.evaluate import EvaluationConfig, evaluate_case
from dosediff.metrics.gamma import GammaConfig
from dosediff.report import tables
from dosediff.report.build import build_report
from dosediff.report.markup import best_mask

SHAPE, SPACING, RX = (6, 8, 8), (2.0, 2.0, 2.0), 50.0
CFG = EvaluationConfig(metrics={"PTV": ["Dmean", "V95"], "Heart": ["Dmean"]}, gamma=GammaConfig(enabled=False))


def _case() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """PTV: reference 50 Gy; prediction 53 Gy in half the PTV, 40 Gy in the other half, so
    Dmean 46.5 (Δ −3.5 Gy) and V95 (47.5 Gy) 50 % instead of 100 % (Δ −50 %).
    Heart: reference 10 Gy, prediction 12 Gy (Δ +2 Gy)."""
    ptv = np.zeros(SHAPE, np.uint8)
    ptv[1:5, 2:6, 2:6] = 1
    heart = np.zeros(SHAPE, np.uint8)
    heart[1:5, 6:8, 2:6] = 1
    ref = np.where(ptv, RX, 0.0) + np.where(heart, 10.0, 0.0)
    pred = np.where(heart, 12.0, 0.0)
    pred[1:3, 2:6, 2:6], pred[3:5, 2:6, 2:6] = 53.0, 40.0
    return ref.astype(np.float32), pred.astype(np.float32), {"PTV": ptv, "Heart": heart}


def _per_case(experiment: str = "m") -> pd.DataFrame:
    ref, pred, masks = _case()
    body = np.ones(SHAPE, bool)
    rows = []
    for case in ("c1", "c2"):  # two identical cases: std 0, the means as above
        flat = evaluate_case(ref, pred, masks, SPACING, body, RX, CFG, targets={"PTV": RX})
        rows += long_rows(experiment, case, flat)
    return pd.DataFrame(rows, columns=COLUMNS)


def test_evaluate_case_signed_scores():
    ref, pred, masks = _case()
    flat = evaluate_case(ref, pred, masks, SPACING, np.ones(SHAPE, bool), RX, CFG, targets={"PTV": RX})
    delta = {(r["roi"], r["metric"]): r["predicted"] - r["reference"] for r in flat.rows}
    assert delta["PTV", "Dmean"] == pytest.approx(-3.5, abs=0.02)
    assert delta["PTV", "V95"] == pytest.approx(-50.0, abs=0.1)
    assert delta["Heart", "Dmean"] == pytest.approx(2.0, abs=0.02)
    assert flat.value("All", "dose_bias") == pytest.approx((-3.5 + 2.0) / 2, abs=0.02)    # signed: they partly cancel
    assert flat.value("All", "dose_score") == pytest.approx((3.5 + 2.0) / 2, abs=0.02)    # absolute: they add
    assert (flat.value("All", "volume_bias"), flat.value("All", "volume_score")) == (pytest.approx(-50.0, abs=0.1),
                                                                                     pytest.approx(50.0, abs=0.1))


def test_summary_and_per_roi_table_carry_the_sign():
    per_case = _per_case()
    key = tables.summary(per_case, 2).set_index(["roi", "metric"])
    assert key.loc[("PTV", "Dmean"), "signed_text"] == "-3.50 ± 0.00"
    assert key.loc[("PTV", "Dmean"), "text"] == "3.50 ± 0.00"
    assert key.loc[("Heart", "Dmean"), "signed_text"] == "+2.00 ± 0.00"
    assert key.loc[("Body", "MAE"), "signed_text"] == ""  # no signed value for an image metric
    t = tables.per_roi_table(per_case, ["m"], decimals=2)
    assert t.loc[("PTV", "ΔDmean (Gy)"), "m"] == "-3.50 ± 0.00"
    assert t.loc[("PTV", "|ΔDmean| (Gy)"), "m"] == "3.50 ± 0.00"
    assert t.loc[("PTV", "ΔV95 (%)"), "m"] == "-50.00 ± 0.00"
    assert t.loc[("Heart", "ΔDmean (Gy)"), "m"] == "+2.00 ± 0.00"
    s = tables.summary_table(tables.summary(per_case, 2))
    assert s.loc[("m", "Heart", "|ΔDmean| (Gy)"), "Signed Δ = predicted − reference: mean ± std"] == "+2.00 ± 0.00"


def test_comparison_and_per_case_tables_signed_columns():
    per_case = pd.concat([_per_case("m"), _per_case("n")], ignore_index=True)
    t = tables.comparison_table(per_case, ["m", "n"], decimals=2)
    assert list(t["Mean ΔD (Gy)"]) == ["-0.75 ± 0.00"] * 2
    assert list(t["Mean ΔV (%)"]) == ["-50.00 ± 0.00"] * 2
    assert list(t["Dose score (Gy)"]) == ["2.75 ± 0.00"] * 2
    best = best_mask(t, "columns")
    assert not best["Mean ΔD (Gy)"].any() and best["Dose score (Gy)"].all()  # no "best" sign
    wide = tables.per_case_table(_per_case())
    assert list(wide.index) == ["c1", "c2"] and wide.index.name == "Case"
    assert wide.loc["c1", "PTV ΔDmean (Gy)"] == "-3.50"
    assert wide.loc["c1", "PTV ΔV95 (%)"] == "-50.0"
    assert wide.loc["c2", "Heart ΔDmean (Gy)"] == "+2.00"
    assert wide.loc["c1", "Mean ΔD (Gy)"] == "-0.75"
    assert wide.loc["c1", "Dose score (Gy)"] == "2.75"  # absolute: no sign
    ssim = float(per_case.loc[per_case["metric"] == "SSIM", "value"].iloc[0])
    assert wide.loc["c1", "SSIM"] == f"{ssim:.3f}"  # SSIM at 0.001, Gy at 0.01, % at 0.1


def test_report_folder_tables_show_signed_errors(tmp_path: Path):
    for exp in ("m", "n"):
        (tmp_path / exp).mkdir()
        _per_case(exp).to_csv(tmp_path / exp / "per_case.csv", index=False)
    out = tmp_path / "report"
    build_report(ReportConfig(tables={"comparison": ["m", "n"]}, per_roi=["m", "n"]),
                 [tmp_path / e / "per_case.csv" for e in ("m", "n")], out)
    per_roi = (out / "per_roi.md").read_text(encoding="utf-8")
    assert "| PTV | ΔDmean (Gy) | -3.50 ± 0.00 | -3.50 ± 0.00 |" in per_roi
    assert "| Heart | ΔDmean (Gy) | +2.00 ± 0.00 | +2.00 ± 0.00 |" in per_roi
    comparison = (out / "comparison.html").read_text(encoding="utf-8")
    assert "<th>Mean ΔD (Gy)</th>" in comparison and "<td>-0.75 ± 0.00</td>" in comparison
    assert "under-doses" in comparison  # the caption says what the sign means
    assert not math.isnan(tables.summary(_per_case())["signed_mean"].dropna().iloc[0])

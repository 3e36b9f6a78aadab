"""Report tables and figures: numbers checked against independent computations (statistics
module, voxel counting), figures read back from the matplotlib objects and the PNG bytes."""

from __future__ import annotations

import math
import statistics
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dosediff.errors import InputError
from dosediff.report import figures, markup, slices, tables

CASES = ["c1", "c2", "c3"]
VALUES = {  # experiment -> (roi, metric, unit) -> per-case values
    "A": {("Body", "MAE", "Gy"): [1.2, 1.5, 1.1], ("Body", "SSIM", ""): [0.90, 0.88, 0.93],
          ("Body", "PSNR", "dB"): [27.0, 28.5, 26.0], ("All", "dose_score", "Gy"): [0.7, 0.9, 0.6],
          ("All", "volume_score", "%"): [1.0, 0.8, 1.3], ("PTV", "D95", "Gy"): [0.5, 0.25, 0.75],
          ("Heart", "Dmean", "Gy"): [0.3, 0.2, 0.4]},
    "B": {("Body", "MAE", "Gy"): [1.6, 1.9, 1.4], ("Body", "SSIM", ""): [0.91, 0.90, 0.95],
          ("Body", "PSNR", "dB"): [25.0, 26.0, 24.5], ("All", "dose_score", "Gy"): [0.9, 1.1, 0.8],
          ("All", "volume_score", "%"): [1.5, 1.2, 1.1], ("PTV", "D95", "Gy"): [0.4, math.nan, 0.6],
          ("Heart", "Dmean", "Gy"): [0.5, 0.1, 0.3]},
}


def make_per_case(drop_heart_row_b_c3: bool = True) -> pd.DataFrame:
    rows = []
    for exp, metrics in VALUES.items():
        for (roi, metric, unit), vals in metrics.items():
            for case, v in zip(CASES, vals):
                if drop_heart_row_b_c3 and (exp, roi, case) == ("B", "Heart", "c3"):
                    continue  # the row itself missing: the ROI was not in the metric set for this case
                note = "ROI absent" if math.isnan(v) else ""
                dvh = roi not in ("Body", "All")
                rows.append({"experiment": exp, "case": case, "roi": roi, "metric": metric, "unit": unit,
                             "reference": 50.0 if dvh else math.nan, "predicted": 50.0 + v if dvh else math.nan,
                             "value": v, "note": note or math.nan})
    return pd.DataFrame(rows, columns=tables.PER_CASE_COLUMNS)


def expected_text(vals: list[float], n_total: int = 3) -> str:
    ok = [v for v in vals if not math.isnan(v)]
    text = f"{statistics.fmean(ok):.3f} ± {statistics.stdev(ok):.3f}"
    return text + (f" (n={len(ok)}/{n_total})" if len(ok) < n_total else "")


# ---------------------------------------------------------------- tables

def test_summary_mean_std_and_nan_counts():
    s = tables.summary(make_per_case())
    key = s.set_index(["experiment", "roi", "metric"])
    for exp, metrics in VALUES.items():
        for (roi, metric, _), vals in metrics.items():
            row = key.loc[(exp, roi, metric)]
            if (exp, roi) == ("B", "Heart"):
                vals = vals[:2]  # c3's row was dropped
            assert row["text"] == expected_text(vals), (exp, roi, metric)
            assert row["n_cases"] == 3
    ptv_b = key.loc[("B", "PTV", "D95")]
    assert (ptv_b["n"], ptv_b["mean"]) == (2, pytest.approx(0.5))
    assert ptv_b["text"].endswith("(n=2/3)") and ptv_b["missing"] == "ROI absent: 1"
    assert key.loc[("B", "Heart", "Dmean")]["n"] == 2
    assert key.loc[("A", "PTV", "D95")]["missing"] == ""


def test_summary_all_nan_and_single_case():
    df = make_per_case()
    df.loc[(df["experiment"] == "A") & (df["roi"] == "PTV"), "value"] = math.nan
    df.loc[(df["experiment"] == "A") & (df["roi"] == "Heart") & (df["case"] != "c1"), "value"] = math.nan
    key = tables.summary(df).set_index(["experiment", "roi", "metric"])
    assert key.loc[("A", "PTV", "D95")]["text"] == "n/a"
    assert key.loc[("A", "Heart", "Dmean")]["text"] == "0.300 (n=1/3)"  # one value: no std to state


def test_read_per_case_roundtrip_and_bad_columns(tmp_path: Path):
    df = make_per_case()
    paths = []
    for exp, g in df.groupby("experiment"):
        (tmp_path / exp).mkdir()
        g.to_csv(tmp_path / exp / "per_case.csv", index=False)
        paths.append(tmp_path / exp / "per_case.csv")
    back = tables.read_per_case(paths)
    pd.testing.assert_frame_equal(tables.summary(back), tables.summary(df))
    df.drop(columns="value").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"bad.csv.*\['value'\]"):
        tables.read_per_case([tmp_path / "bad.csv"])


def test_comparison_table_order_labels_cells():
    t = tables.comparison_table(make_per_case(), ["B", "A"], labels={"A": "DoseDiff (PSDM)"})
    assert list(t.index) == ["B", "DoseDiff (PSDM)"]
    assert list(t.columns) == ["MAE (Gy)", "SSIM", "PSNR (dB)", "Gamma pass rate (%)", "Dose score (Gy)",
                               "Mean ΔD (Gy)", "Volume score (%)", "Mean ΔV (%)"]
    assert (t["Mean ΔD (Gy)"] == "n/a").all()  # these per-case tables have no dose_bias rows
    assert t.loc["DoseDiff (PSDM)", "SSIM"] == expected_text(VALUES["A"][("Body", "SSIM", "")])
    assert t.loc["B", "Volume score (%)"] == expected_text(VALUES["B"][("All", "volume_score", "%")])
    t2 = tables.comparison_table(make_per_case(), ["A", "B"], columns=[("PTV", "D95"), ("Body", "gamma_pass_rate")])
    assert list(t2.columns) == ["PTV |ΔD95| (Gy)", "Gamma pass rate (%)"]
    assert t2.loc["B", "PTV |ΔD95| (Gy)"] == expected_text([0.4, math.nan, 0.6])
    assert (t2["Gamma pass rate (%)"] == "n/a").all()
    with pytest.raises(InputError, match="C"):
        tables.comparison_table(make_per_case(), ["A", "C"])


def test_per_roi_table_layout():
    t = tables.per_roi_table(make_per_case(), ["A", "B"])
    assert list(t.index) == [("Body", "MAE (Gy)"), ("Body", "SSIM"), ("Body", "PSNR (dB)"),
                             ("PTV", "ΔD95 (Gy)"), ("PTV", "|ΔD95| (Gy)"), ("Heart", "ΔDmean (Gy)"),
                             ("Heart", "|ΔDmean| (Gy)"), ("All", "Dose score (Gy)"), ("All", "Volume score (%)")]
    assert t.loc[("Heart", "|ΔDmean| (Gy)"), "B"] == expected_text([0.5, 0.1])


def _bold_cells(md: str) -> list[tuple[str, str]]:
    """(row key, header) of every bold cell of a Markdown table."""
    lines = [line.strip().strip("|").split(" | ") for line in md.strip().splitlines()]
    header = [h.strip() for h in lines[0]]
    out = []
    for cells in lines[2:]:
        for h, c in zip(header, cells):
            if c.strip().startswith("**"):
                out.append((cells[0].strip(), h))
    return out


def test_markdown_bolds_best_per_column(tmp_path: Path):
    t = tables.comparison_table(make_per_case(), ["A", "B"])
    csv_path, md_path = markup.write_table(t, tmp_path / "sub" / "table1")
    bold = set(_bold_cells(md_path.read_text()))
    # lower is better for MAE and the scores (A wins), higher for SSIM (B) and PSNR (A)
    assert bold == {("A", "MAE (Gy)"), ("B", "SSIM"), ("A", "PSNR (dB)"), ("A", "Dose score (Gy)"),
                    ("A", "Volume score (%)")}
    back = pd.read_csv(csv_path, index_col=0)
    assert back.loc["B", "SSIM"] == t.loc["B", "SSIM"]


def test_markdown_ties_and_rows(tmp_path: Path):
    df = pd.DataFrame({"MAE (Gy)": ["1.000 ± 0.1", "1.000 ± 0.2", "2.000 ± 0.1"], "Note": ["x", "y", "z"]},
                      index=pd.Index(["e1", "e2", "e3"], name="Experiment"))
    assert set(_bold_cells(markup.to_markdown(df))) == {("e1", "MAE (Gy)"), ("e2", "MAE (Gy)")}
    t = tables.per_roi_table(make_per_case(), ["A", "B"])
    _, md = markup.write_table(t, tmp_path / "table3")
    text = md.read_text()
    ssim_line = next(line for line in text.splitlines() if "| SSIM |" in line)
    heart_line = next(line for line in text.splitlines() if "| Heart | \\|ΔDmean\\| (Gy) |" in line)  # | escaped
    # per row: SSIM higher is better (B), Heart |ΔDmean| lower is better (A 0.3 vs B 0.3 -> tie)
    assert ssim_line.count("**") == 2 and ssim_line.rstrip(" |").endswith("**")
    assert heart_line.count("**") == 4


def test_seed_spread_against_statistics():
    rng = np.random.default_rng(1)
    rows, means = [], {}
    for exp in ("breast", "npc"):
        for seed in range(5):
            vals = rng.normal(1.2, 0.05, 4)
            vals[0] = math.nan if seed == 2 else vals[0]  # a NaN cell is left out of that seed's mean
            ok = [v for v in vals if not math.isnan(v)]
            means.setdefault(exp, []).append(sum(ok) / len(ok))
            rows += [{"experiment": exp, "seed": seed, "case": f"c{i}", "metric": "MAE", "value": v}
                     for i, v in enumerate(vals)]
    spread = tables.seed_spread(pd.DataFrame(rows)).set_index(["experiment", "metric"])
    for exp, m in means.items():
        r = spread.loc[(exp, "MAE")]
        assert r["n_seeds"] == 5
        assert r["std"] == pytest.approx(statistics.stdev(m), rel=1e-12)
        assert r["range"] == pytest.approx(max(m) - min(m), rel=1e-12)
    wide = tables.seed_spread_table(tables.seed_spread(pd.DataFrame(rows)))
    npc = means["npc"]
    assert wide.loc["npc", "MAE (Gy)"] == (f"{statistics.fmean(npc):.4f} ± {statistics.stdev(npc):.4f} "
                                           f"(range {max(npc) - min(npc):.4f}, 5 seeds)")
    assert "**" not in markup.to_markdown(wide)
    with pytest.raises(InputError, match="seed"):
        tables.seed_spread(pd.DataFrame(rows).drop(columns="seed"))


# ---------------------------------------------------------------- figures

def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


SHAPE = (10, 28, 32)
SPACING = (3.0, 1.5, 1.0)


def test_dvh_uniform_dose_is_a_step(tmp_path: Path):
    ref = np.full(SHAPE, 40.0, dtype=np.float32)
    pred = np.full(SHAPE, 30.0, dtype=np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:8, 5:20, 5:25] = 1
    two = np.zeros(SHAPE, np.uint8)
    two[:, :, 26:] = 1
    ref[:, :, 29:] = 20.0  # "Two" gets half its columns at 20 Gy, half at 40 Gy
    fig = figures.dvh_figure(ref, pred, {"PTV": mask, "Two": two, "Empty": np.zeros(SHAPE)}, SPACING,
                             tmp_path / "dvh.png", title="case c1 · A", bin_width_gy=0.5)
    w, h = png_size(tmp_path / "dvh.png")
    assert 700 < w < 2000 and 400 < h < 1500
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"PTV reference", "PTV prediction", "Two reference", "Two prediction"}
    assert lines["PTV reference"].get_linestyle() == "-" and lines["PTV prediction"].get_linestyle() == "--"
    assert lines["PTV reference"].get_color() == lines["PTV prediction"].get_color()
    assert lines["PTV reference"].get_color() != lines["Two reference"].get_color()
    for label, level in (("PTV reference", 40.0), ("PTV prediction", 30.0)):
        x, y = (np.asarray(a, float) for a in lines[label].get_data())
        assert np.all(y[x <= level] == 100.0) and np.all(y[x > level] == 0.0)
        assert x.max() == pytest.approx(level + 0.5)  # the drop to 0 one bin above the dose
    # independent: % of the ROI's voxels with dose >= x, counted directly
    x, y = (np.asarray(a, float) for a in lines["Two reference"].get_data())
    doses = ref[two.astype(bool)]
    expected = np.array([100.0 * np.count_nonzero(doses >= xi) / doses.size for xi in x])
    np.testing.assert_allclose(y, expected)
    assert set(np.round(y, 6)) == {100.0, 50.0, 0.0}
    assert fig.axes[0].get_xlabel() == "Dose (Gy)" and fig.axes[0].get_ylabel() == "Volume (%)"
    assert fig.axes[0].get_title() == "case c1 · A"


def _phantom():
    zz, yy, xx = np.indices(SHAPE)
    body = ((yy - 14) / 12.0) ** 2 + ((xx - 16) / 14.0) ** 2 < 1
    ct = np.where(body, 30, -1000).astype(np.int16)
    ref = (60.0 * np.exp(-((zz - 6) ** 2 * 9 + (yy - 12) ** 2 * 2.25 + (xx - 10) ** 2) / 60.0) * body)
    pred = ref * 1.05 - 1.0 * body
    pred[6, 12, 20] += 7.0  # a hot spot on the default axial slice, inside the body
    return ct, ref.astype(np.float32), pred.astype(np.float32), body.astype(np.uint8)


def test_dose_slices_symmetric_difference_and_aspect(tmp_path: Path):
    ct, ref, pred, body = _phantom()
    std = np.abs(pred - ref) * 0.3
    fig = slices.dose_slices_figure(ct, ref, pred, body, tmp_path / "slices.png", std=std, spacing_mm=SPACING,
                                     title="case c1 · A")
    w, h = png_size(tmp_path / "slices.png")
    assert 1000 < w < 4000 and 400 < h < 3000
    z, y = np.unravel_index(np.argmax(ref), ref.shape)[:2]
    assert (z, y) == (6, 12)
    ylabels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel().startswith(("Axial", "Coronal"))]
    assert ylabels == [f"Axial, z = {z * SPACING[0]:.1f} mm", f"Coronal, y = {y * SPACING[1]:.1f} mm"]
    lim = 0.1 * float(max(ref.max(), pred.max()))  # no prescription given: 10 % of the dose scale
    diff_images = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "RdBu_r"]
    assert len(diff_images) == 2
    for im in diff_images:
        lo, hi = im.get_clim()
        assert lo == pytest.approx(-hi) and hi == pytest.approx(lim)
    assert sum(im.get_cmap().name == "viridis" for ax in fig.axes for im in ax.get_images()) == 2
    titled = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(titled) == ["Reference", "Prediction", "Prediction − reference", "Uncertainty (std)"]
    axial, coronal = (ax for ax in fig.axes if ax.get_ylabel().startswith(("Axial", "Coronal")))
    # extents in mm with equal aspect: a pixel is as tall and wide as the voxel is in mm
    l, r, b, t = axial.get_images()[0].get_extent()
    assert (r - l, b - t) == pytest.approx((SHAPE[2] * SPACING[2], SHAPE[1] * SPACING[1]))
    l, r, b, t = coronal.get_images()[0].get_extent()
    assert (r - l, t - b) == pytest.approx((SHAPE[2] * SPACING[2], SHAPE[0] * SPACING[0]))
    cbar_labels = {ax.get_ylabel() for ax in fig.axes}
    assert {"Dose (Gy)", f"Δ dose (Gy),\nclipped at ±{lim:.1f}", "Std (Gy)"} <= cbar_labels


def test_dose_slices_target_centre_and_no_std(tmp_path: Path):
    ct, ref, pred, body = _phantom()
    target = np.zeros(SHAPE, np.uint8)
    target[3:6, 15:20, 8:12] = 1  # centre (4, 17)
    fig = slices.dose_slices_figure(ct, ref, pred, body, tmp_path / "s.png", spacing_mm=SPACING, target=target)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["Reference", "Prediction",
                                                                     "Prediction − reference"]
    assert any(ax.get_ylabel() == "Axial, z = 12.0 mm" for ax in fig.axes)
    assert any(ax.get_ylabel() == "Coronal, y = 25.5 mm" for ax in fig.axes)
    with pytest.raises(InputError, match="axial_index"):
        slices.dose_slices_figure(ct, ref, pred, body, tmp_path / "t.png", axial_index=SHAPE[0])


def test_shape_mismatch_names_both_shapes(tmp_path: Path):
    ct, ref, pred, body = _phantom()
    bad = pred[:, :, :-2]
    with pytest.raises(InputError, match=r"reference \(10, 28, 32\).*predicted \(10, 28, 30\)"):
        slices.dose_slices_figure(ct, ref, bad, body, tmp_path / "x.png")
    with pytest.raises(InputError, match=r"reference \(10, 28, 32\).*predicted \(10, 28, 30\)"):
        figures.dvh_figure(ref, bad, {"Body": body}, SPACING, tmp_path / "y.png")
    with pytest.raises(InputError, match=r"mask PTV \(10, 28, 30\)"):
        figures.dvh_figure(ref, pred, {"PTV": body[:, :, :-2]}, SPACING, tmp_path / "z.png")
    assert not any(tmp_path.iterdir())


def test_steps_and_seed_figures(tmp_path: Path):
    rows = []
    for steps, sec in ((1, 0.5), (2, 1.0), (4, 2.1), (8, 4.0)):
        for i, case in enumerate(("c1", "c2", "c3")):
            for metric, base in (("MAE", 1.0), ("SSIM", 0.9)):
                rows.append({"experiment": "A", "steps": steps, "case": case, "metric": metric,
                             "value": base + 1.0 / steps + 0.01 * i, "seconds": sec + 0.1 * i})
    df = pd.DataFrame(rows)
    fig = figures.steps_figure(df, tmp_path / "steps.png")
    png_size(tmp_path / "steps.png")
    mae_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "MAE (Gy)")
    x, y = mae_ax.get_lines()[0].get_data()
    np.testing.assert_allclose(x, [1, 2, 4, 8])
    np.testing.assert_allclose(y, [1.0 + 1.0 / s + 0.01 for s in (1, 2, 4, 8)])
    time_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "Time per case (s)")
    np.testing.assert_allclose(time_ax.get_lines()[0].get_ydata(), [0.6, 1.1, 2.2, 4.1])
    seeds = pd.DataFrame([{"experiment": e, "seed": s, "case": c, "metric": "MAE", "value": 1.0 + 0.01 * s}
                          for e in ("A", "B") for s in range(4) for c in ("c1", "c2")])
    figures.seed_figure(seeds, tmp_path / "seeds.png")
    w, h = png_size(tmp_path / "seeds.png")
    assert w > 300 and h > 300
    with pytest.raises(InputError, match="seconds"):
        figures.steps_figure(df.drop(columns="seconds"), tmp_path / "bad.png")

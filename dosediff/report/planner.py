"""The planner's report of one new patient: predicted DVHs, clinical goals, dose slices.

Files in the report folder (written together: the folder appears only when complete):

    goals.csv     one row per goal: ROI, goal, predicted value, pass/fail (and the plan's, when
                  the patient has a planned RTDOSE on the CT)
    dvh.csv       cumulative DVH per ROI: dose_gy, volume_cc, volume_percent, for the
                  prediction (and the plan)
    dvh.png       those curves: prediction solid, plan dashed
    slices.png    axial and coronal slices through the first target's centre: CT with the
                  predicted dose and the ROI outlines (and the uncertainty where n_samples > 1)
    summary.md    the goals table and the files, for a browser or a print-out

No torch here; the case holds only its pseudonymous id (no patient field reaches a file).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dosediff.atomic import atomic_dir
from dosediff.goals import Goal, evaluate_goals
from dosediff.metrics.dvh import cumulative_dvh
from dosediff.report.figures import dvh_curve, finish_dvh_axes
from dosediff.report.plotting import CT_WINDOW_HU, LOW_DOSE_FRACTION, STYLE, new_figure, roi_colours, save
from dosediff.report.slices import default_slice_indices
from dosediff.volume import Case

GOAL_COLUMNS = ["roi", "goal", "unit", "predicted", "predicted_pass", "plan", "plan_pass"]


def goals_table(case: Case, predicted: np.ndarray, goals: Sequence[Goal], targets: dict[str, float],
                prescription_gy: float) -> pd.DataFrame:
    """Predicted value and pass/fail of each goal, with the plan's beside them where the case has a dose."""
    spacing = case.geometry.spacing
    pred = evaluate_goals(goals, predicted, case.masks, spacing, targets, prescription_gy, case.case_id)
    plan = evaluate_goals(goals, case.dose, case.masks, spacing, targets, prescription_gy, case.case_id) \
        if case.dose is not None else [{"value": math.nan, "passed": None}] * len(pred)
    rows = [{"roi": p["roi"], "goal": p["goal"], "unit": p["unit"], "predicted": p["value"],
             "predicted_pass": _verdict(p["passed"]), "plan": q["value"], "plan_pass": _verdict(q["passed"])}
            for p, q in zip(pred, plan)]
    return pd.DataFrame(rows, columns=GOAL_COLUMNS)


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[passed]


def dvh_table(case: Case, predicted: np.ndarray, bin_width_gy: float) -> pd.DataFrame:
    """Cumulative DVHs of every ROI of the case, prediction (and plan), long format."""
    frames = []
    for source, dose in (("predicted", predicted), ("plan", case.dose)):
        if dose is None:
            continue
        for roi, mask in case.masks.items():
            curve = cumulative_dvh(dose, mask, case.geometry.spacing, bin_width_gy, roi, case.case_id)
            frames.append(pd.DataFrame({"roi": roi, "source": source, "dose_gy": np.round(curve.dose_gy, 6),
                                        "volume_cc": curve.volume_cc, "volume_percent": curve.volume_percent}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["roi", "source", "dose_gy", "volume_cc", "volume_percent"])


def dvh_plot(case: Case, predicted: np.ndarray, path: Path, bin_width_gy: float, title: str) -> Figure:
    """Predicted DVH of every ROI (solid), the plan's dashed where the case has one."""
    colours = dict(zip(case.masks, roi_colours(len(case.masks))))
    with matplotlib.rc_context(STYLE):
        fig = new_figure(7.5, 4.6)
        ax = fig.add_subplot()
        for roi, mask in case.masks.items():
            for dose, style, kind in ((predicted, "-", "prediction"), (case.dose, "--", "plan")):
                if dose is not None:
                    x, y = dvh_curve(dose, mask, case.geometry.spacing, bin_width_gy, roi)
                    ax.plot(x, y, style, color=colours[roi], lw=1.6, label=f"{roi} {kind}")
        ax.set_ylim(0, 102)
        finish_dvh_axes(ax, title)
    save(fig, path)
    return fig


def slices_plot(case: Case, predicted: np.ndarray, std: np.ndarray | None, target: str | None, path: Path,
                title: str) -> Figure:
    """Axial and coronal slices through the target's centre: CT, predicted dose wash, ROI outlines;
    a second column with the uncertainty (std over samples) when given.

    Outlines: contour() without `origin` indexes rows as imshow does on either imshow origin
    (passing origin="upper" would flip them top to bottom)."""
    sz, sy, sx = case.geometry.spacing
    z, y = default_slice_indices(predicted, case.masks.get(target) if target else None)
    views = [(f"Axial (z = {z})", lambda a: a[z], sy / sx, "upper"),
             (f"Coronal (y = {y})", lambda a: a[:, y, :], sz / sx, "lower")]
    top = float(predicted.max()) if predicted.max() > 0 else 1.0
    columns = ["Predicted dose"] + (["Uncertainty (std)"] if std is not None else [])
    colours = dict(zip(case.masks, roi_colours(len(case.masks))))
    with matplotlib.rc_context(STYLE):
        fig = new_figure(4.2 * len(columns) + 1.6, 7.0)
        axes = fig.subplots(2, len(columns), squeeze=False)
        for r, (label, view, aspect, origin) in enumerate(views):
            for c, name in enumerate(columns):
                ax = axes[r, c]
                ax.imshow(view(case.ct), cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], aspect=aspect,
                          origin=origin, interpolation="nearest")
                values, cmap, vmax, unit = (predicted, "turbo", top, "Dose (Gy)") if c == 0 else \
                    (std, "viridis", max(float(std.max()), 1e-6), "Std (Gy)")
                wash = np.ma.masked_less_equal(view(values), LOW_DOSE_FRACTION * vmax)
                im = ax.imshow(wash, cmap=cmap, vmin=0, vmax=vmax, alpha=0.6, aspect=aspect, origin=origin,
                               interpolation="nearest")
                for roi, mask in case.masks.items():
                    m2 = view(mask)
                    if m2.any() and not m2.all():
                        ax.contour(m2.astype(float), levels=[0.5], colors=[colours[roi]], linewidths=0.9)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(name if r == 0 else "")
                if c == 0:
                    ax.set_ylabel(label)
                fig.colorbar(im, ax=ax, shrink=0.85, label=unit, pad=0.02)
        handles = [matplotlib.lines.Line2D([], [], color=colours[r], lw=2, label=r) for r in case.masks]
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle(title)
    save(fig, path)
    return fig


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def summary_markdown(case: Case, goals: pd.DataFrame, model_label: str, has_std: bool) -> str:
    """The report's front page."""
    plan = case.dose is not None
    lines = [f"# Predicted dose: case {case.case_id}", "", f"Model: {model_label}.", "",
             "Predicted dose against the clinical goals" + (" (the plan's dose beside it)." if plan else "."), ""]
    head = ["ROI", "Goal", "Predicted", ""] + (["Plan", ""] if plan else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in goals.itertuples():
        cells = [row.roi, row.goal, f"{_fmt(row.predicted)} {row.unit}", row.predicted_pass]
        cells += [f"{_fmt(row.plan)} {row.unit}", row.plan_pass] if plan else []
        lines.append("| " + " | ".join(cells) + " |")
    if goals.empty:
        lines.append("| (no clinical goals configured: set predict.goals) |" + " |" * (len(head) - 1))
    lines += ["", "![DVH](dvh.png)", "", "![Dose slices](slices.png)", "",
              "Files: goals.csv, dvh.csv, dvh.png, slices.png" + (" (with the uncertainty map)" if has_std else "")]
    return "\n".join(lines) + "\n"


def write_planner_report(case: Case, predicted: np.ndarray, std: np.ndarray | None, goals: Sequence[Goal],
                         targets: dict[str, float], prescription_gy: float, model_label: str, out_dir: Path,
                         bin_width_gy: float = 0.1) -> pd.DataFrame:
    """Write the report folder (see the module docstring); return the goals table."""
    table = goals_table(case, predicted, goals, targets, prescription_gy)
    target = next((t for t in targets if t in case.masks), None)
    title = f"Case {case.case_id}: predicted dose"
    with atomic_dir(Path(out_dir)) as tmp:
        table.to_csv(tmp / "goals.csv", index=False, float_format="%.4f")
        dvh_table(case, predicted, bin_width_gy).to_csv(tmp / "dvh.csv", index=False, float_format="%.6g")
        dvh_plot(case, predicted, tmp / "dvh.png", bin_width_gy, title)
        slices_plot(case, predicted, std, target, tmp / "slices.png", title)
        (tmp / "summary.md").write_text(summary_markdown(case, table, model_label, std is not None))
    return table

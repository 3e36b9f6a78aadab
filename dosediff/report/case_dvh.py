"""One DVH figure per case with every model overlaid: the reference solid, each model its own
line style, one colour per ROI, a prescription marker and a small margin below 0 Gy so curves
that start at 0 Gy are not hidden behind the axis (paper Figs. 6 and 9, all models at once)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dosediff.errors import input_error, warn
from dosediff.names import case_predictions
from dosediff.report.figures import dvh_curve, finish_dvh_axes
from dosediff.report.plotting import STYLE, check_grid, check_spacing, new_figure, roi_colours, save

MODEL_STYLES = ["--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))]


def dvh_overlay_figure(reference: np.ndarray, predictions: Mapping[str, np.ndarray],
                       masks: Mapping[str, np.ndarray], spacing_mm: Sequence[float], path: str | Path,
                       prescription_gy: float | None = None, title: str | None = None,
                       bin_width_gy: float = 0.01, case: str | None = None) -> Figure:
    """Cumulative DVHs of every ROI for the reference (solid) and each model (predictions:
    model label -> dose on the reference grid), lines labelled "<ROI> <model>"."""
    if len(predictions) > len(MODEL_STYLES):
        raise input_error("DVH overlay", f"{len(predictions)} models", f"at most {len(MODEL_STYLES)} models",
                          "list fewer models in the report's first table", case=case)
    check_grid("DVH overlay", case, reference=reference, **{f"prediction {k}": v for k, v in predictions.items()})
    spacing = check_spacing(spacing_mm, "DVH overlay")
    rois = [r for r, m in masks.items() if m is not None and np.any(m)]
    for r in set(masks) - set(rois):
        warn("DVH overlay", f"ROI {r} has an empty mask", "it is left out of the plot", case=case)
    doses = [("reference", reference, "-")] + [(k, v, s) for (k, v), s in zip(predictions.items(), MODEL_STYLES)]
    colours = roi_colours(len(rois))
    with matplotlib.rc_context(STYLE):
        fig = new_figure(8.5, 5.0)
        ax = fig.add_subplot()
        x_max = 0.0
        for roi, colour in zip(rois, colours):
            for name, dose, style in doses:
                x, y = dvh_curve(dose, masks[roi], spacing, bin_width_gy, roi)
                ax.plot(x, y, ls=style, color=colour, lw=1.8 if name == "reference" else 1.3, label=f"{roi} {name}")
                x_max = max(x_max, float(x[-1]))
        if prescription_gy:
            ax.axvline(prescription_gy, color="0.3", lw=0.9, ls=(0, (2, 2)))
            ax.text(prescription_gy, 101, f" Rx {prescription_gy:g} Gy", color="0.3", fontsize=8, va="bottom")
            x_max = max(x_max, prescription_gy)
        x_max = x_max if x_max > 0 else 1.0
        ax.set_xlim(-0.02 * x_max, x_max * 1.03)
        ax.set_ylim(-1, 106)
        handles = [Line2D([], [], color=c, lw=2.5, label=r) for r, c in zip(rois, colours)]
        handles += [Line2D([], [], color="0.2", ls=s, lw=1.5, label=n) for n, _, s in doses]
        finish_dvh_axes(ax, title, handles)
    save(fig, path)
    return fig


def case_dvh_figures(references: Sequence[Path], predictions: Sequence[Path], models: Sequence[str],
                     out_dir: Path, bin_width_gy: float = 0.01) -> list[Path]:
    """out_dir/<case>.png for each case folder in `references`: `predictions` holds each model's
    <case>.nii.gz in the order of `references`, model after model (`models`: their labels)."""
    from dosediff.io.nifti import read_case, read_image

    n = len(references)
    if len(predictions) != n * len(models):
        raise input_error("dosediff report --predictions", f"{len(predictions)} files",
                          f"one per case ({n}) and model ({len(models)})",
                          "pass every model's prediction of each case, model after model")
    pairs = {m: case_predictions(references, predictions[i * n:(i + 1) * n], "report") for i, m in enumerate(models)}
    written = []
    for j, case_dir in enumerate(references):
        case, ref = Path(case_dir).name, read_case(Path(case_dir))
        if ref.dose is None:
            raise input_error(case_dir, "no planned dose", "a reference dose to plot against",
                              "report only cases ingested with their RTDOSE", case=case)
        doses = {m: read_image(pairs[m][j][2])[0] for m in models}
        path = Path(out_dir) / f"{case}.png"
        dvh_overlay_figure(ref.dose, doses, ref.masks, ref.geometry.spacing, path,
                           prescription_gy=ref.prescription_gy, title=f"{case}: DVH, all models",
                           bin_width_gy=bin_width_gy, case=case)
        written.append(path)
    return written

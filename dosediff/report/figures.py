"""Per-case and per-dataset figures (matplotlib, Agg canvas, PNG; no torch, no pyplot state).

Per case: DVH curves (reference solid, prediction dashed, one colour per ROI, paper Figs. 6
and 9) and dose slices (CT with reference and predicted dose, their difference and the
uncertainty map, axial and coronal, paper Figs. 5 and 8). Per dataset: DDIM steps versus
quality and time (paper Fig. 4) and the spread over sampling seeds (paper Table 4).

Every function builds its own Figure on an Agg canvas, saves a PNG and returns the Figure
so callers (and tests) can read the plotted data back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dosediff.errors import input_error, warn
from dosediff.metrics.dvh import cumulative_dvh
from dosediff.report.tables import SEED_COLUMNS, metric_label

DPI = 150
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9}
STEPS_COLUMNS = ["experiment", "steps", "case", "metric", "value", "seconds"]


# ---------------------------------------------------------------- helpers

def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")


def _check_grid(where: str, case: str | None, **arrays: np.ndarray | None) -> tuple[int, ...]:
    """All given arrays 3-D and on one grid; input_error naming every shape otherwise."""
    shapes = {k: tuple(np.shape(a)) for k, a in arrays.items() if a is not None}
    first = next(iter(shapes.values()))
    if len(set(shapes.values())) > 1 or len(first) != 3:
        listing = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise input_error(where, f"array shapes {listing}", "3-D (z, y, x) arrays all on the same grid",
                          "resample the prediction onto the reference dose (CT) grid before plotting", case=case)
    return first


def _check_spacing(spacing_mm: Sequence[float], where: str) -> tuple[float, float, float]:
    s = tuple(float(v) for v in spacing_mm)
    if len(s) != 3 or not all(v > 0 for v in s):
        raise input_error(where, f"spacing {tuple(spacing_mm)}", "three positive voxel sizes in mm, (z, y, x)",
                          "pass the case's geometry.spacing")
    return s  # type: ignore[return-value]


def _roi_colours(n: int) -> list:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# ---------------------------------------------------------------- DVH

def dvh_curve(dose: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float],
              bin_width_gy: float = 0.01, roi: str = "ROI") -> tuple[np.ndarray, np.ndarray]:
    """Cumulative DVH for plotting: (dose edges in Gy, % of the ROI receiving at least that dose),
    closed by a final point at 0 % one bin above the highest edge so the fall to zero is drawn."""
    curve = cumulative_dvh(dose, mask, spacing_mm, bin_width_gy, roi=roi)
    if curve.dose_gy.size == 0:
        return np.zeros(0), np.zeros(0)
    x = np.append(curve.dose_gy, curve.dose_gy[-1] + bin_width_gy)
    y = np.append(curve.volume_percent, 0.0)
    return x, y


def dvh_figure(reference: np.ndarray, predicted: np.ndarray, masks: Mapping[str, np.ndarray],
               spacing_mm: Sequence[float], path: str | Path, title: str | None = None,
               bin_width_gy: float = 0.01, case: str | None = None) -> Figure:
    """Cumulative DVH of every ROI: reference solid, prediction dashed, one colour per ROI.

    Empty masks are skipped with a warning. Returns the Figure (its Axes hold one solid and
    one dashed Line2D per ROI, labelled "<ROI> reference" / "<ROI> prediction").
    """
    _check_grid("DVH figure", case, reference=reference, predicted=predicted)
    for name, mask in masks.items():
        _check_grid(f"DVH figure, ROI {name}", case, reference=reference, **{f"mask {name}": mask})
    spacing = _check_spacing(spacing_mm, "DVH figure")
    rois = [r for r, m in masks.items() if m is not None and np.any(m)]
    for r in set(masks) - set(rois):
        warn("DVH figure", f"ROI {r} has an empty mask", "it is left out of the plot", case=case)
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(7.5, 4.6)
        ax = fig.add_subplot()
        x_max = 0.0
        for roi, colour in zip(rois, _roi_colours(len(rois))):
            for dose, style, kind in ((reference, "-", "reference"), (predicted, "--", "prediction")):
                x, y = dvh_curve(dose, masks[roi], spacing, bin_width_gy, roi)
                ax.plot(x, y, style, color=colour, lw=1.6, label=f"{roi} {kind}")
                x_max = max(x_max, float(x[-1]))
        ax.set_xlim(0, x_max * 1.03 if x_max > 0 else 1.0)
        ax.set_ylim(0, 102)
        ax.set_xlabel("Dose (Gy)")
        ax.set_ylabel("Volume (%)")
        ax.grid(True, alpha=0.3)
        handles = [Line2D([], [], color=c, lw=2.5, label=r) for r, c in zip(rois, _roi_colours(len(rois)))]
        handles += [Line2D([], [], color="0.2", ls="-", label="reference"),
                    Line2D([], [], color="0.2", ls="--", label="prediction")]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        if title:
            ax.set_title(title)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------- dose slices

DIFF_CLIP_FRACTION = 0.10  # difference maps span ±10 % of the prescription


def diff_limit_gy(prescription_gy: float | None, dose_max: float) -> float:
    """Symmetric colour limit (Gy) of a difference map: 10 % of the prescription (else of dose_max)."""
    base = prescription_gy if prescription_gy and prescription_gy > 0 else dose_max
    return DIFF_CLIP_FRACTION * base


def image_extent(rows: np.ndarray, cols: np.ndarray, origin: str) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) putting pixel (i, j) at (cols[j], rows[i]): the
    coordinates ax.contour(cols, rows, ...) uses. origin "upper" puts row 0 at the top."""
    dr = rows[1] - rows[0] if rows.size > 1 else 1.0
    dc = cols[1] - cols[0] if cols.size > 1 else 1.0
    left, right = cols[0] - dc / 2, cols[-1] + dc / 2
    first, last = rows[0] - dr / 2, rows[-1] + dr / 2
    return (left, right, last, first) if origin == "upper" else (left, right, first, last)


def _orientation_letters(ax, letters: tuple[str, str, str, str]) -> None:
    """Patient sides (top, bottom, left, right) at the panel's edges; axes in mm."""
    for text, xy in zip(letters, ((0.5, 0.97), (0.5, 0.03), (0.03, 0.5), (0.97, 0.5))):
        ax.text(*xy, text, transform=ax.transAxes, color="yellow", fontsize=9, fontweight="bold",
                ha="center", va="center")
    ax.tick_params(labelsize=7)
    ax.set_xlabel("mm", fontsize=7, labelpad=1)


def default_slice_indices(reference: np.ndarray, target: np.ndarray | None = None) -> tuple[int, int]:
    """(axial z, coronal y): through the target's centre of mass when a non-empty target is
    given, else through the reference dose's hottest voxel."""
    if target is not None and np.any(target):
        centre = np.argwhere(np.asarray(target).astype(bool)).mean(axis=0)
        return int(round(centre[0])), int(round(centre[1]))
    z, y, _ = np.unravel_index(int(np.nanargmax(reference)), reference.shape)
    return int(z), int(y)


def dose_slices_figure(ct: np.ndarray, reference: np.ndarray, predicted: np.ndarray, body: np.ndarray,
                       path: str | Path, std: np.ndarray | None = None, axial_index: int | None = None,
                       coronal_index: int | None = None, dose_max: float | None = None,
                       spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), target: np.ndarray | None = None,
                       title: str | None = None, low_dose_fraction: float = 0.05,
                       ct_window: tuple[float, float] = (-160.0, 240.0), case: str | None = None,
                       prescription_gy: float | None = None) -> Figure:
    """Axial (top) and coronal (bottom) slices; columns: CT + reference dose, CT + predicted
    dose, predicted - reference (diverging, inside the body, clipped at ±DIFF_CLIP_FRACTION of
    the prescription, or of dose_max when none is given, so typical errors are not washed out
    by the worst voxel), and the per-voxel standard deviation over samples when `std` is given.
    Axes are in mm from the first voxel, slices are named by their position in mm, the dotted
    line is where the other view cuts this one, and letters mark the patient's sides.

    Dose washes share one scale 0..dose_max (default: the larger maximum of both doses) and are
    transparent below low_dose_fraction x dose_max. Pixel aspect follows spacing_mm (z, y, x),
    so thick slices are not squashed; coronal slices put higher z at the top (superior up for
    the usual LPS direction), axial slices anterior up with the patient's left on the right.
    """
    shape = _check_grid("dose slice figure", case, ct=ct, reference=reference, predicted=predicted,
                        body=body, std=std, target=target)
    sz, sy, sx = _check_spacing(spacing_mm, "dose slice figure")
    z0, y0 = default_slice_indices(reference, target)
    z = z0 if axial_index is None else int(axial_index)
    y = y0 if coronal_index is None else int(coronal_index)
    for name, idx, n in (("axial_index", z, shape[0]), ("coronal_index", y, shape[1])):
        if not 0 <= idx < n:
            raise input_error(f"dose slice figure {name}", f"value {idx}", f"an index in [0, {n - 1}]",
                              "pick a slice inside the volume or leave it unset", case=case)
    if dose_max is None:
        dose_max = float(max(np.nanmax(reference), np.nanmax(predicted)))
    dose_max = dose_max if dose_max > 0 else 1.0
    inside = np.asarray(body).astype(bool)

    # (label, 2-D getter, row coords, column coords, origin, letters (top, bottom, left, right));
    # imshow extent and contour both in mm, so the outline sits on the pixels it outlines
    zc, yc, xc = (np.arange(n) * s for n, s in zip(shape, (sz, sy, sx)))
    views = [(f"Axial, z = {zc[z]:.1f} mm", lambda a: a[z], yc, xc, "upper", ("A", "P", "R", "L")),
             (f"Coronal, y = {yc[y]:.1f} mm", lambda a: a[:, y, :], zc, xc, "lower", ("S", "I", "R", "L"))]
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    diff_lim = diff_limit_gy(prescription_gy, dose_max)
    std_max = 0.0
    if std is not None:
        std_max = max(float(np.max(np.where(v[1](inside), v[1](std), 0.0))) for v in views)
        std_max = std_max if std_max > 0 else 0.01 * dose_max

    columns = ["Reference", "Prediction", "Prediction − reference"] + (["Uncertainty (std)"] if std is not None else [])
    panel_w = 3.0
    heights = [panel_w * shape[1] * sy / (shape[2] * sx), panel_w * shape[0] * sz / (shape[2] * sx)]
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(panel_w * len(columns) + 0.9 * len(columns), sum(heights) + 0.9 + (0.3 if title else 0))
        axes = fig.subplots(2, len(columns), gridspec_kw={"height_ratios": heights}, squeeze=False)
        images: dict[str, object] = {}
        for r, (label, view, rows, cols, origin, letters) in enumerate(views):
            ct2 = view(ct)
            body2 = view(inside)
            kw = {"extent": image_extent(rows, cols, origin), "origin": origin, "interpolation": "nearest"}
            for c, name in enumerate(columns):
                ax = axes[r, c]
                ax.imshow(ct2, cmap="gray", vmin=ct_window[0], vmax=ct_window[1], **kw)
                if name in ("Reference", "Prediction"):
                    dose2 = view(reference if name == "Reference" else predicted)
                    wash = np.ma.masked_less(dose2, low_dose_fraction * dose_max)
                    im = ax.imshow(wash, cmap="turbo", vmin=0, vmax=dose_max, alpha=0.65, **kw)
                    unit = "Dose (Gy)"
                elif name.startswith("Prediction −"):
                    im = ax.imshow(np.ma.masked_where(~body2, view(diff)), cmap="RdBu_r", vmin=-diff_lim,
                                   vmax=diff_lim, **kw)
                    unit = f"Δ dose (Gy), clipped at ±{diff_lim:.1f}"
                else:
                    # viridis, not magma: its zero is not the black of air around the body
                    im = ax.imshow(np.ma.masked_where(~body2, view(std)), cmap="viridis", vmin=0, vmax=std_max, **kw)
                    unit = "Std (Gy)"
                images[f"{r}/{name}"] = im
                if body2.any() and not body2.all():
                    ax.contour(cols, rows, body2.astype(float), levels=[0.5], colors="w", linewidths=0.6)
                _orientation_letters(ax, letters)
                if r == 0:
                    ax.set_title(name)
                if c == 0:
                    ax.set_ylabel(label)
                    # where the other view cuts this one
                    ax.axhline(yc[y] if r == 0 else zc[z], color="w", ls=":", lw=0.8, alpha=0.8)
                fig.colorbar(im, ax=ax, shrink=0.85, label=unit, pad=0.02,
                             extend="both" if name.startswith("Prediction −") else "neither")
        if title:
            fig.suptitle(title)
    _save(fig, path)
    return fig


# ---------------------------------------------------------------- sampling studies

def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise input_error(what, f"columns {list(df.columns)} lack {missing}", f"the columns {list(columns)}",
                          "regenerate the table with the sampling study of the predict stage")


def steps_figure(steps: pd.DataFrame, path: str | Path, metrics: Sequence[str] | None = None,
                 title: str | None = None) -> Figure:
    """Paper Fig. 4: per metric, mean ± std over cases versus DDIM steps (log axis), one colour
    per experiment, and the mean time per case on a second (right) axis, grey dashed."""
    _require(steps, STEPS_COLUMNS, "steps study table (steps.csv)")
    df = steps.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    metrics = list(metrics or dict.fromkeys(df["metric"]))
    experiments = list(dict.fromkeys(df["experiment"]))
    colours = _roi_colours(len(experiments))
    # one time per (experiment, steps, case), however many metric rows repeat it
    times = (df.groupby(["experiment", "steps", "case"])["seconds"].first()
             .groupby(level=["experiment", "steps"]).mean())
    ncol = min(3, len(metrics))
    nrow = -(-len(metrics) // ncol)
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(4.2 * ncol, 3.2 * nrow + (0.3 if title else 0))
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        for ax, metric in zip(axes, metrics):
            sub = df[df["metric"] == metric]
            twin = ax.twinx()
            for exp, colour in zip(experiments, colours):
                g = sub[sub["experiment"] == exp].groupby("steps")["value"]
                mean, sd = g.mean(), g.std(ddof=1)
                if mean.empty:
                    continue
                ax.errorbar(mean.index.to_numpy(dtype=float), mean.to_numpy(), yerr=sd.fillna(0).to_numpy(),
                            color=colour, marker="o", ms=4, capsize=3, label=exp)
                t = times.loc[exp]
                twin.plot(t.index.to_numpy(dtype=float), t.to_numpy(), ls="--", marker="s", ms=3, color="0.45",
                          lw=1.0)
            ticks = sorted(sub["steps"].unique())
            ax.set_xscale("log")
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(int(t)) for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("DDIM steps")
            ax.set_ylabel(metric_label(metric, None, "All"))
            twin.set_ylabel("Time per case (s)", color="0.35")
            twin.tick_params(axis="y", colors="0.35")
            ax.grid(True, alpha=0.3)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        # one legend for all panels, below them, so it never covers a curve
        handles = [Line2D([], [], color=c, marker="o", ms=4, label=e) for e, c in zip(experiments, colours)]
        handles.append(Line2D([], [], color="0.45", ls="--", marker="s", ms=3, label="time per case (right axis)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), frameon=False)
        if title:
            fig.suptitle(title)
    _save(fig, path)
    return fig


def seed_figure(seeds: pd.DataFrame, path: str | Path, title: str | None = None) -> Figure:
    """Spread over sampling seeds: per metric, one point per seed (the mean over cases) for each
    experiment, with a bar at the mean over seeds."""
    _require(seeds, SEED_COLUMNS, "seed study table (seeds.csv)")
    df = seeds.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    per_seed = {k: g.groupby("seed")["value"].mean().dropna().to_numpy()
                for k, g in df.groupby(["metric", "experiment"], sort=False)}
    metrics = list(dict.fromkeys(df["metric"]))
    experiments = list(dict.fromkeys(df["experiment"]))
    ncol = min(3, len(metrics))
    nrow = -(-len(metrics) // ncol)
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(3.6 * ncol, 3.0 * nrow + (0.3 if title else 0))
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        for ax, metric in zip(axes, metrics):
            for i, exp in enumerate(experiments):
                v = per_seed.get((metric, exp), np.zeros(0))
                if v.size == 0:
                    continue
                jitter = np.linspace(-0.15, 0.15, v.size) if v.size > 1 else np.zeros(1)
                ax.plot(i + jitter, v, "o", ms=3.5, alpha=0.7, color=_roi_colours(len(experiments))[i])
                ax.hlines(v.mean(), i - 0.25, i + 0.25, color="k", lw=1.5)
            ax.set_xticks(range(len(experiments)))
            ax.set_xticklabels(experiments, rotation=20, ha="right")
            ax.set_xlim(-0.6, len(experiments) - 0.4)
            ax.set_ylabel(f"{metric_label(metric, None, 'All')}, mean over cases")
            ax.grid(True, axis="y", alpha=0.3)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
    _save(fig, path)
    return fig

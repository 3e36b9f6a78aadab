"""Per-case and per-dataset figures (matplotlib, Agg canvas, PNG; no torch, no pyplot state).

Per case: DVH curves (reference solid, prediction dashed, one colour per ROI, paper Figs. 6
and 9); the dose slices (paper Figs. 5 and 8) are in slices.py. Per dataset: DDIM steps versus
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
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dosediff.errors import warn
from dosediff.metrics.dvh import cumulative_dvh
from dosediff.report.plotting import STYLE, check_grid, check_spacing, new_figure, roi_colours, save
from dosediff.report.tables import SEED_COLUMNS, metric_label, require_columns

__all__ = ["dvh_curve", "dvh_figure", "seed_figure", "steps_figure"]
STEPS_COLUMNS = ["experiment", "steps", "case", "metric", "value", "seconds"]
STUDY_FIX = "regenerate the table with the sampling study of the predict stage"


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


def finish_dvh_axes(ax, title: str | None, handles: list | None = None) -> None:
    """What every DVH plot shares: axis labels, grid, the legend right of the axes, the title."""
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if title:
        ax.set_title(title)


def dvh_figure(reference: np.ndarray, predicted: np.ndarray, masks: Mapping[str, np.ndarray],
               spacing_mm: Sequence[float], path: str | Path, title: str | None = None,
               bin_width_gy: float = 0.01, case: str | None = None) -> Figure:
    """Cumulative DVH of every ROI: reference solid, prediction dashed, one colour per ROI.

    Empty masks are skipped with a warning. Returns the Figure (its Axes hold one solid and
    one dashed Line2D per ROI, labelled "<ROI> reference" / "<ROI> prediction").
    """
    check_grid("DVH figure", case, reference=reference, predicted=predicted)
    for name, mask in masks.items():
        check_grid(f"DVH figure, ROI {name}", case, reference=reference, **{f"mask {name}": mask})
    spacing = check_spacing(spacing_mm, "DVH figure")
    rois = [r for r, m in masks.items() if m is not None and np.any(m)]
    for r in set(masks) - set(rois):
        warn("DVH figure", f"ROI {r} has an empty mask", "it is left out of the plot", case=case)
    with matplotlib.rc_context(STYLE):
        fig = new_figure(7.5, 4.6)
        ax = fig.add_subplot()
        x_max = 0.0
        for roi, colour in zip(rois, roi_colours(len(rois))):
            for dose, style, kind in ((reference, "-", "reference"), (predicted, "--", "prediction")):
                x, y = dvh_curve(dose, masks[roi], spacing, bin_width_gy, roi)
                ax.plot(x, y, style, color=colour, lw=1.6, label=f"{roi} {kind}")
                x_max = max(x_max, float(x[-1]))
        ax.set_xlim(0, x_max * 1.03 if x_max > 0 else 1.0)
        ax.set_ylim(0, 102)
        handles = [Line2D([], [], color=c, lw=2.5, label=r) for r, c in zip(rois, roi_colours(len(rois)))]
        handles += [Line2D([], [], color="0.2", ls="-", label="reference"),
                    Line2D([], [], color="0.2", ls="--", label="prediction")]
        finish_dvh_axes(ax, title, handles)
    save(fig, path)
    return fig


# ---------------------------------------------------------------- sampling studies

def steps_figure(steps: pd.DataFrame, path: str | Path, metrics: Sequence[str] | None = None,
                 title: str | None = None) -> Figure:
    """Paper Fig. 4: per metric, mean ± std over cases versus DDIM steps (log axis), one colour
    per experiment, and the mean time per case on a second (right) axis, grey dashed."""
    require_columns(steps, STEPS_COLUMNS, "steps study table (steps.csv)", STUDY_FIX)
    df = steps.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    metrics = list(metrics or dict.fromkeys(df["metric"]))
    experiments = list(dict.fromkeys(df["experiment"]))
    colours = roi_colours(len(experiments))
    # one time per (experiment, steps, case), however many metric rows repeat it
    times = (df.groupby(["experiment", "steps", "case"])["seconds"].first()
             .groupby(level=["experiment", "steps"]).mean())
    ncol, nrow = min(3, len(metrics)), -(-len(metrics) // min(3, len(metrics)))
    with matplotlib.rc_context(STYLE):
        fig = new_figure(4.2 * ncol, 3.2 * nrow + (0.3 if title else 0))
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
    save(fig, path)
    return fig


def seed_figure(seeds: pd.DataFrame, path: str | Path, title: str | None = None) -> Figure:
    """Spread over sampling seeds: per metric, one point per seed (the mean over cases) for each
    experiment, with a bar at the mean over seeds."""
    require_columns(seeds, SEED_COLUMNS, "seed study table (seeds.csv)", STUDY_FIX)
    df = seeds.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    per_seed = {k: g.groupby("seed")["value"].mean().dropna().to_numpy()
                for k, g in df.groupby(["metric", "experiment"], sort=False)}
    metrics = list(dict.fromkeys(df["metric"]))
    experiments = list(dict.fromkeys(df["experiment"]))
    ncol = min(3, len(metrics))
    nrow = -(-len(metrics) // ncol)
    with matplotlib.rc_context(STYLE):
        fig = new_figure(3.6 * ncol, 3.0 * nrow + (0.3 if title else 0))
        axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
        for ax, metric in zip(axes, metrics):
            for i, exp in enumerate(experiments):
                v = per_seed.get((metric, exp), np.zeros(0))
                if v.size == 0:
                    continue
                jitter = np.linspace(-0.15, 0.15, v.size) if v.size > 1 else np.zeros(1)
                ax.plot(i + jitter, v, "o", ms=3.5, alpha=0.7, color=roi_colours(len(experiments))[i])
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
    save(fig, path)
    return fig

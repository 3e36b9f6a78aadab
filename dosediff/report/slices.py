"""Dose-slice figure of one case (paper Figs. 5 and 8): axial and coronal slices of the CT with
the reference and predicted dose, their difference and the sampling uncertainty; positions in
mm, patient sides marked, the body outline and optional isodose lines of the prescription."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dosediff.errors import input_error
from dosediff.report.plotting import CT_WINDOW_HU, LOW_DOSE_FRACTION, STYLE, check_grid, check_spacing, new_figure, save

DIFF_CLIP_FRACTION = 0.10  # difference maps span ±10 % of the prescription
# isodose line per percent of the prescription: colour and style; others get the last entry's
ISODOSE_STYLES = {95.0: ("magenta", "-"), 50.0: ("black", "--")}
BODY_COLOUR, CUT_COLOUR = "white", "white"
DIFF_PANEL = "Prediction − reference"


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


def default_slice_indices(reference: np.ndarray, target: np.ndarray | None = None) -> tuple[int, int]:
    """(axial z, coronal y): through the target's centre of mass when a non-empty target is
    given, else through the reference dose's hottest voxel."""
    if target is not None and np.any(target):
        centre = np.argwhere(np.asarray(target).astype(bool)).mean(axis=0)
        return int(round(centre[0])), int(round(centre[1]))
    z, y, _ = np.unravel_index(int(np.nanargmax(reference)), reference.shape)
    return int(z), int(y)


def isodose_levels(prescription_gy: float | None, percents: Sequence[float]) -> list[tuple[float, float]]:
    """(percent, level in Gy) pairs, ascending by level; none without a prescription."""
    if not prescription_gy or prescription_gy <= 0:
        return []
    return sorted(((float(p), float(p) / 100.0 * prescription_gy) for p in percents), key=lambda t: t[1])


def _isodose_style(percent: float) -> tuple[str, str]:
    return ISODOSE_STYLES.get(percent, ("black", ":"))


@dataclass(frozen=True)
class _View:
    label: str                      # row label: view and slice position in mm
    cut: Callable[[np.ndarray], np.ndarray]
    rows: np.ndarray                # mm of the image rows, columns
    cols: np.ndarray
    origin: str                     # imshow origin
    letters: tuple[str, str, str, str]  # patient sides at top, bottom, left, right
    cut_line: float                 # where the other view cuts this one (row coordinate, mm)

    def imshow_kw(self) -> dict:
        return {"extent": image_extent(self.rows, self.cols, self.origin), "origin": self.origin,
                "interpolation": "nearest"}


def _views(shape: tuple[int, ...], spacing: tuple[float, float, float], z: int, y: int) -> list[_View]:
    """Axial (anterior up, patient's left on the right) and coronal (higher z up: superior for
    the usual LPS direction); imshow extent and contour both in mm, so outlines sit on pixels."""
    zc, yc, xc = (np.arange(n) * s for n, s in zip(shape, spacing))
    return [_View(f"Axial, z = {zc[z]:.1f} mm", lambda a: a[z], yc, xc, "upper", ("A", "P", "R", "L"), yc[y]),
            _View(f"Coronal, y = {yc[y]:.1f} mm", lambda a: a[:, y, :], zc, xc, "lower", ("S", "I", "R", "L"),
                  zc[z])]


def _orientation_letters(ax, letters: tuple[str, str, str, str]) -> None:
    """Patient sides (top, bottom, left, right) at the panel's edges; axes in mm."""
    for text, xy in zip(letters, ((0.5, 0.97), (0.5, 0.03), (0.03, 0.5), (0.97, 0.5))):
        ax.text(*xy, text, transform=ax.transAxes, color="yellow", fontsize=9, fontweight="bold",
                ha="center", va="center")
    ax.tick_params(labelsize=7)
    ax.set_xlabel("mm", fontsize=7, labelpad=1)


def _slice_indices(shape: tuple[int, ...], reference: np.ndarray, target: np.ndarray | None,
                   axial_index: int | None, coronal_index: int | None, case: str | None) -> tuple[int, int]:
    z0, y0 = default_slice_indices(reference, target)
    z = z0 if axial_index is None else int(axial_index)
    y = y0 if coronal_index is None else int(coronal_index)
    for name, idx, n in (("axial_index", z, shape[0]), ("coronal_index", y, shape[1])):
        if not 0 <= idx < n:
            raise input_error(f"dose slice figure {name}", f"value {idx}", f"an index in [0, {n - 1}]",
                              "pick a slice inside the volume or leave it unset", case=case)
    return z, y


@dataclass
class _Panels:
    """What every panel draws from: the volumes and the shared colour scales."""

    ct: np.ndarray
    reference: np.ndarray
    predicted: np.ndarray
    body: np.ndarray
    std: np.ndarray | None
    dose_max: float
    diff_lim: float
    std_max: float
    isodose: list[tuple[float, float]]

    def draw(self, ax, view: _View, name: str):
        """One panel; returns (image for the colourbar, colourbar label)."""
        kw = view.imshow_kw()
        ax.imshow(view.cut(self.ct), cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], **kw)
        body2 = view.cut(self.body)
        if name in ("Reference", "Prediction"):
            dose2 = view.cut(self.reference if name == "Reference" else self.predicted)
            wash = np.ma.masked_less(dose2, LOW_DOSE_FRACTION * self.dose_max)
            im = ax.imshow(wash, cmap="turbo", vmin=0, vmax=self.dose_max, alpha=0.65, **kw)
            unit = "Dose (Gy)"
        elif name == DIFF_PANEL:
            diff = view.cut(self.predicted).astype(np.float64) - view.cut(self.reference)
            im = ax.imshow(np.ma.masked_where(~body2, diff), cmap="RdBu_r", vmin=-self.diff_lim,
                           vmax=self.diff_lim, **kw)
            unit = f"Δ dose (Gy),\nclipped at ±{self.diff_lim:.1f}"
        else:
            # viridis, not magma: its zero is not the black of air around the body
            im = ax.imshow(np.ma.masked_where(~body2, view.cut(self.std)), cmap="viridis", vmin=0,
                           vmax=self.std_max, **kw)
            unit = "Std (Gy)"
        if body2.any() and not body2.all():  # the body outline first: tests find it as the first contour
            ax.contour(view.cols, view.rows, body2.astype(float), levels=[0.5], colors=BODY_COLOUR, linewidths=0.6)
        if name in ("Reference", "Prediction") and self.isodose:
            self._isodose(ax, view, dose2)
        return im, unit

    def _isodose(self, ax, view: _View, dose2: np.ndarray) -> None:
        inside = [(p, lvl) for p, lvl in self.isodose if dose2.min() < lvl < dose2.max()]
        if not inside:
            return
        styles = [_isodose_style(p) for p, _ in inside]
        cs = ax.contour(view.cols, view.rows, dose2, levels=[lvl for _, lvl in inside],
                        colors=[c for c, _ in styles], linestyles=[s for _, s in styles], linewidths=1.0)
        cs.set_gid("isodose")


def _std_max(std: np.ndarray, inside: np.ndarray, views: list[_View]) -> float:
    """Top of the uncertainty scale: the largest std inside the body on the shown slices."""
    return max(float(np.max(np.where(v.cut(inside), v.cut(std), 0.0))) for v in views)


def _legend(fig: Figure, isodose: list[tuple[float, float]]) -> None:
    """Below the panels: what the lines are (on a dark patch, as they are drawn over the CT)."""
    handles = [Line2D([], [], color=BODY_COLOUR, lw=1.0, label="body outline"),
               Line2D([], [], color=CUT_COLOUR, ls=":", lw=1.0, label="where the other view cuts")]
    for p, lvl in sorted(isodose, reverse=True):
        colour, style = _isodose_style(p)
        handles.append(Line2D([], [], color="white" if colour == "black" else colour, ls=style, lw=1.2,
                              label=f"{p:g} % of prescription ({lvl:.1f} Gy)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=True, facecolor="0.3",
               edgecolor="0.3", labelcolor="white", fontsize=8)


def dose_slices_figure(ct: np.ndarray, reference: np.ndarray, predicted: np.ndarray, body: np.ndarray,
                       path: str | Path, std: np.ndarray | None = None, axial_index: int | None = None,
                       coronal_index: int | None = None, dose_max: float | None = None,
                       spacing_mm: Sequence[float] = (1.0, 1.0, 1.0), target: np.ndarray | None = None,
                       title: str | None = None, case: str | None = None,
                       prescription_gy: float | None = None, isodose_percent: Sequence[float] = ()) -> Figure:
    """Axial (top) and coronal (bottom) slices; columns: CT + reference dose, CT + predicted
    dose, predicted - reference (diverging, inside the body, clipped at ±DIFF_CLIP_FRACTION of
    the prescription, or of dose_max when none is given, so typical errors are not washed out
    by the worst voxel), and the per-voxel standard deviation over samples when `std` is given.
    Dose panels carry isodose lines at isodose_percent of the prescription (none without one).

    Dose washes share one scale 0..dose_max (default: the larger maximum of both doses) and are
    transparent below LOW_DOSE_FRACTION x dose_max. Pixel aspect follows spacing_mm (z, y, x).
    """
    shape = check_grid("dose slice figure", case, ct=ct, reference=reference, predicted=predicted,
                       body=body, std=std, target=target)
    spacing = check_spacing(spacing_mm, "dose slice figure")
    z, y = _slice_indices(shape, reference, target, axial_index, coronal_index, case)
    dose_max = float(max(np.nanmax(reference), np.nanmax(predicted))) if dose_max is None else dose_max
    dose_max = dose_max if dose_max > 0 else 1.0
    sx = shape[2] * spacing[2]
    views = _views(shape, spacing, z, y)
    inside = np.asarray(body).astype(bool)
    std_max = 0.0 if std is None else _std_max(std, inside, views) or 0.01 * dose_max
    panels = _Panels(ct, reference, predicted, inside, std, dose_max, diff_limit_gy(prescription_gy, dose_max),
                     std_max, isodose_levels(prescription_gy, isodose_percent))
    columns = ["Reference", "Prediction", DIFF_PANEL] + (["Uncertainty (std)"] if std is not None else [])
    heights = [3.0 * shape[1] * spacing[1] / sx, 3.0 * shape[0] * spacing[0] / sx]  # 3-in panels, mm aspect
    with matplotlib.rc_context(STYLE):
        fig = new_figure(4.0 * len(columns), sum(heights) + 1.3 + (0.3 if title else 0))
        axes = fig.subplots(2, len(columns), gridspec_kw={"height_ratios": heights}, squeeze=False)
        for r, view in enumerate(views):
            for c, name in enumerate(columns):
                ax = axes[r, c]
                im, unit = panels.draw(ax, view, name)
                _orientation_letters(ax, view.letters)
                if r == 0:
                    ax.set_title(name)
                if c == 0:
                    ax.set_ylabel(view.label)
                    ax.axhline(view.cut_line, color=CUT_COLOUR, ls=":", lw=0.8, alpha=0.8)
                fig.colorbar(im, ax=ax, shrink=0.9, label=unit, pad=0.02,
                             extend="both" if name == DIFF_PANEL else "neither")
        _legend(fig, panels.isodose)
        if title:
            fig.suptitle(title)
    save(fig, path)
    return fig

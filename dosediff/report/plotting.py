"""Shared plotting helpers: one style, figures on their own Agg canvas, argument checks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dosediff.errors import input_error

DPI = 150
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9}
CT_WINDOW_HU = (-160.0, 240.0)  # the soft-tissue window of the CT under dose washes
LOW_DOSE_FRACTION = 0.05  # dose washes are transparent below this fraction of their scale


def new_figure(width_in: float, height_in: float) -> Figure:
    """A Figure with constrained layout on its own Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> None:
    """PNG at DPI, parent folders created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")


def check_grid(where: str, case: str | None, **arrays: np.ndarray | None) -> tuple[int, ...]:
    """All given arrays 3-D and on one grid; input_error naming every shape otherwise."""
    shapes = {k: tuple(np.shape(a)) for k, a in arrays.items() if a is not None}
    first = next(iter(shapes.values()))
    if len(set(shapes.values())) > 1 or len(first) != 3:
        listing = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise input_error(where, f"array shapes {listing}", "3-D (z, y, x) arrays all on the same grid",
                          "resample the prediction onto the reference dose (CT) grid before plotting", case=case)
    return first


def check_spacing(spacing_mm: Sequence[float], where: str) -> tuple[float, float, float]:
    """Three positive voxel sizes in mm, else input_error."""
    s = tuple(float(v) for v in spacing_mm)
    if len(s) != 3 or not all(v > 0 for v in s):
        raise input_error(where, f"spacing {tuple(spacing_mm)}", "three positive voxel sizes in mm, (z, y, x)",
                          "pass the case's geometry.spacing")
    return s  # type: ignore[return-value]


def roi_colours(n: int) -> list:
    """n distinct colours (tab10, tab20 beyond ten)."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]

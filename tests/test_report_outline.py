"""The body outline on the dose-slice figures lies on the mask it outlines, in both views.

An asymmetric (L-shaped, off-centre) mask is drawn; every vertex of the plotted contour is
mapped back to pixel indices through the image's own extent and origin (matplotlib's imshow
convention) and must lie half-way between an inside and an outside pixel of the mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dosediff.report import slices

SHAPE = (12, 20, 24)
SPACING = (3.0, 2.0, 1.5)


def _asymmetric_body() -> np.ndarray:
    body = np.zeros(SHAPE, bool)
    body[2:10, 3:9, 4:20] = True     # a slab near the top rows (anterior / low z)
    body[2:6, 9:17, 4:9] = True      # a leg down one side only
    return body


def _pixel_index(x: float, y: float, extent, origin: str, n_rows: int, n_cols: int) -> tuple[float, float]:
    """Continuous (row, col) of a data point under imshow's extent/origin convention."""
    left, right, bottom, top = extent
    col = (x - left) / (right - left) * n_cols - 0.5
    frac = (y - top) / (bottom - top) if origin == "upper" else (y - bottom) / (top - bottom)
    return frac * n_rows - 0.5, col


def _check_outline(ax, mask2d: np.ndarray) -> int:
    image = ax.get_images()[0]
    extent, origin = image.get_extent(), image.origin
    contour = next(c for c in ax.collections if hasattr(c, "get_paths") and hasattr(c, "levels"))
    checked = 0
    for path in contour.get_paths():
        for x, y in path.vertices:
            r, c = _pixel_index(x, y, extent, origin, *mask2d.shape)
            if abs(r - round(r)) < 1e-6:   # on a vertical pixel edge: neighbours left/right
                rr, c0 = int(round(r)), int(np.floor(c))
                pair = (mask2d[rr, c0], mask2d[rr, c0 + 1])
                assert abs(c - c0 - 0.5) < 1e-6, (r, c)
            else:                          # on a horizontal edge: neighbours above/below
                cc, r0 = int(round(c)), int(np.floor(r))
                pair = (mask2d[r0, cc], mask2d[r0 + 1, cc])
                assert abs(r - r0 - 0.5) < 1e-6 and abs(c - cc) < 1e-6, (r, c)
            assert pair[0] != pair[1], f"outline vertex ({r}, {c}) is not on the mask's edge"
            checked += 1
    return checked


@pytest.mark.parametrize("view", ["axial", "coronal"])
def test_outline_on_mask(tmp_path: Path, view: str):
    body = _asymmetric_body()
    ct = np.where(body, 40, -1000).astype(np.int16)
    ref = np.where(body, 50.0, 0.0).astype(np.float32)
    fig = slices.dose_slices_figure(ct, ref, ref * 0.98, body.astype(np.uint8), tmp_path / "f.png",
                                     axial_index=4, coronal_index=5, spacing_mm=SPACING, prescription_gy=50.0)
    row = 0 if view == "axial" else 1
    panels = [ax for ax in fig.axes if ax.get_images() and ax.collections][row * 3:(row + 1) * 3]
    mask2d = body[4] if view == "axial" else body[:, 5, :]
    assert len(panels) == 3
    for ax in panels:
        assert _check_outline(ax, mask2d) > 20
    label = panels[0].get_ylabel()
    assert label == ("Axial, z = 12.0 mm" if view == "axial" else "Coronal, y = 10.0 mm")
    letters = {t.get_text() for t in panels[0].texts}
    assert letters == ({"A", "P", "R", "L"} if view == "axial" else {"S", "I", "R", "L"})


def test_difference_clipped_to_tenth_of_prescription(tmp_path: Path):
    body = _asymmetric_body()
    ct = np.where(body, 40, -1000).astype(np.int16)
    ref = np.where(body, 50.0, 0.0).astype(np.float32)
    pred = ref.copy()
    pred[4, 5, 10] += 30.0  # one hot voxel must not set the scale
    fig = slices.dose_slices_figure(ct, ref, pred, body.astype(np.uint8), tmp_path / "f.png",
                                     spacing_mm=SPACING, prescription_gy=60.0)
    diffs = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "RdBu_r"]
    assert [im.get_clim() for im in diffs] == [(-6.0, 6.0)] * 2
    assert any(ax.get_ylabel() == "Δ dose (Gy),\nclipped at ±6.0" for ax in fig.axes)

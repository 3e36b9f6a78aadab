"""Isodose lines on the dose-slice figures: at 95 % and 50 % of the prescription, where the
dose crosses those levels, with a legend entry each; off with [] or without a prescription.

The dose rises linearly along x (2 Gy per mm), so the isodose line of level L is the straight
line x = L / 2 mm in both views: an analytic position for every vertex of the drawn contour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dosediff.errors import InputError
from dosediff.metrics.evaluate import EvaluationConfig
from dosediff.report.slices import dose_slices_figure

SHAPE, SPACING, RX, GY_PER_MM = (6, 10, 30), (2.0, 1.5, 1.0), 40.0, 2.0


def _volumes() -> tuple[np.ndarray, ...]:
    x_mm = np.arange(SHAPE[2]) * SPACING[2]
    dose = np.broadcast_to(GY_PER_MM * x_mm, SHAPE).astype(np.float32)  # 0 .. 58 Gy
    body = np.zeros(SHAPE, np.uint8)
    body[1:5, 2:8, 1:29] = 1
    ct = np.where(body, 40, -1000).astype(np.int16)
    return ct, dose, body


def _isodose_sets(fig) -> list:
    return [c for ax in fig.axes for c in ax.collections if c.get_gid() == "isodose"]


def test_isodose_levels_and_positions(tmp_path: Path):
    ct, dose, body = _volumes()
    fig = dose_slices_figure(ct, dose, dose.copy(), body, tmp_path / "f.png", spacing_mm=SPACING,
                             prescription_gy=RX, isodose_percent=EvaluationConfig().isodose_percent)
    sets = _isodose_sets(fig)
    assert len(sets) == 4  # reference and prediction panels, axial and coronal
    for cs in sets:
        assert list(cs.levels) == pytest.approx([0.5 * RX, 0.95 * RX])
        for level, segments in zip(cs.levels, cs.allsegs):
            vertices = np.concatenate(segments)
            assert vertices[:, 0] == pytest.approx(level / GY_PER_MM, abs=1e-6)  # x in mm where dose = level
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "95 % of prescription (38.0 Gy)" in legend and "50 % of prescription (20.0 Gy)" in legend
    assert "body outline" in legend and "where the other view cuts" in legend


def test_isodose_off(tmp_path: Path):
    ct, dose, body = _volumes()
    off = dose_slices_figure(ct, dose, dose, body, tmp_path / "a.png", spacing_mm=SPACING, prescription_gy=RX,
                             isodose_percent=[])
    no_rx = dose_slices_figure(ct, dose, dose, body, tmp_path / "b.png", spacing_mm=SPACING,
                               isodose_percent=[95, 50])
    for fig in (off, no_rx):
        assert _isodose_sets(fig) == []
        assert not any("prescription" in t.get_text() for leg in fig.legends for t in leg.get_texts())


@pytest.mark.parametrize("bad", [[0], [95, 95], [250]])
def test_isodose_setting_checked(bad):
    with pytest.raises(InputError, match="evaluate.isodose_percent"):
        EvaluationConfig(isodose_percent=bad)

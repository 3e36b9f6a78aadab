"""Gamma pass rate: identical doses, a global shift on a flat region, an analytic ramp shift."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from dosediff.errors import InputError
from dosediff.metrics.gamma import GammaConfig, gamma_pass_rate

SPACING = (2.5, 2.0, 2.0)


def plateau_dose(shape=(16, 30, 30)) -> np.ndarray:
    """Exactly 100 Gy within 14 mm of the centre, falling linearly to 0 at 20 mm."""
    r = np.sqrt(sum(((i - (n - 1) / 2) * s) ** 2 for i, n, s in zip(np.indices(shape), shape, SPACING)))
    return 100.0 * np.clip((20.0 - r) / 6.0, 0.0, 1.0), r


def test_identical_doses_pass_everywhere() -> None:
    ref, _ = plateau_dose()
    res = gamma_pass_rate(ref, ref.copy(), SPACING)
    assert res.pass_rate == 100.0
    assert res.evaluated_points == np.count_nonzero(ref >= 0.1 * ref.max())
    assert res.nan_points == 0
    assert np.all(np.isnan(res.gamma[ref < 0.1 * ref.max()]))


def test_five_percent_shift_fails_3_3_on_the_plateau_and_passes_5_3() -> None:
    ref, r = plateau_dose()
    pred = ref + 0.05 * ref.max()  # +5 % of the global maximum everywhere
    # Within 8 mm of the centre the nearest point where pred equals the reference's dose is more
    # than 5 mm away, so the dose term decides: gamma = 5 % / 3 % exactly.
    flat = r <= 8.0
    assert flat.sum() > 50
    strict = gamma_pass_rate(ref, pred, SPACING, settings=GammaConfig(skip_once_passed=False, max_gamma=1.8))
    g = strict.gamma
    # On the plateau no nearby point matches: gamma = 5 % / 3 % exactly.
    np.testing.assert_allclose(g[flat], 5 / 3, rtol=1e-9)
    assert strict.pass_rate < 100.0
    # On the flank (16.7 Gy per mm) the reference's dose lies 0.3 mm away: these points pass.
    steep = (r > 15.0) & (ref >= 10.0)
    assert steep.sum() > 20 and np.all(g[steep] <= 1.0)
    # Default (fast) settings give the same pass/fail decision.
    fast = gamma_pass_rate(ref, pred, SPACING)
    assert fast.pass_rate == pytest.approx(strict.pass_rate)
    loose = gamma_pass_rate(ref, pred, SPACING, settings=GammaConfig(dose_percent=5.0))
    assert loose.pass_rate == 100.0


@pytest.mark.parametrize("shift_mm, passes", [(2.0, True), (6.0, False)])
def test_ramp_shift_matches_the_analytic_gamma(shift_mm: float, passes: bool) -> None:
    # A linear ramp of g % per mm shifted by s mm: gamma = |g s| / sqrt(dd^2 + g^2 dta^2).
    x = np.arange(60) * 1.0  # mm
    grad = 1.0  # Gy per mm, normalisation 100 Gy -> 1 % per mm
    ref = np.broadcast_to(20.0 + grad * x, (3, 3, 60)).copy()
    ref[..., -1] = 100.0  # pins the global maximum at 100 Gy
    pred = np.broadcast_to(20.0 + grad * (x - shift_mm), (3, 3, 60)).copy()
    pred[..., -1] = 100.0
    expected = abs(1.0 * shift_mm) / math.sqrt(3.0**2 + 1.0**2 * 3.0**2)
    assert (expected <= 1.0) == passes
    cfg = GammaConfig(skip_once_passed=False, max_gamma=1.6, cutoff_percent=0.0)
    res = gamma_pass_rate(ref, pred, (3.0, 3.0, 1.0), settings=cfg)
    interior = np.zeros(ref.shape, bool)
    interior[:, :, 10:50] = True  # away from the ends of the ramp
    np.testing.assert_allclose(res.gamma[interior], expected, atol=0.02)
    fast = gamma_pass_rate(ref, pred, (3.0, 3.0, 1.0), settings=GammaConfig(cutoff_percent=0.0))
    assert np.all((fast.gamma[interior] <= 1.0) == passes)


def test_body_restriction_subset_and_bad_input() -> None:
    ref, _ = plateau_dose()
    rng = np.random.default_rng(0)
    pred = ref + ndimage.gaussian_filter(rng.standard_normal(ref.shape), 2) * 150
    body = np.zeros(ref.shape, np.uint8)
    body[:, :15] = 1
    res = gamma_pass_rate(ref, pred, SPACING, body=body)
    assert res.evaluated_points == np.count_nonzero((ref >= 0.1 * ref.max()) & (body > 0))
    full = gamma_pass_rate(ref, pred, SPACING)
    assert np.allclose(res.gamma[body > 0], full.gamma[body > 0], equal_nan=True)
    sub = gamma_pass_rate(ref, pred, SPACING, settings=GammaConfig(max_points=300, seed=4))
    again = gamma_pass_rate(ref, pred, SPACING, settings=GammaConfig(max_points=300, seed=4))
    assert sub.evaluated_points == 300 and sub.pass_rate == again.pass_rate
    assert 20.0 < full.pass_rate < 95.0 and abs(sub.pass_rate - full.pass_rate) < 10.0
    bad = pred.copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        gamma_pass_rate(ref, bad, SPACING)
    with pytest.raises(InputError, match=r"evaluate\.gamma\.max_gamma"):
        GammaConfig(max_gamma=1.0)
    with pytest.raises(InputError, match=r"\(16, 30, 29\)"):
        gamma_pass_rate(ref, pred[..., :29], SPACING)
    zero = gamma_pass_rate(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), SPACING)
    assert math.isnan(zero.pass_rate) and zero.evaluated_points == 0

"""Image metrics inside the body: analytic values and scikit-image's SSIM as references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from dosediff.errors import InputError
from dosediff.metrics.image import image_metrics, mae, psnr, ssim, ssim_map, ssim_sigmas


def smooth_dose(shape=(24, 32, 28), seed=0, scale=60.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    return (scale * (d - d.min()) / (d.max() - d.min())).astype(np.float32)


def ball(shape, radius) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    c = [(n - 1) / 2 for n in shape]
    return ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2).astype(np.uint8)


def test_identical_volumes() -> None:
    ref = smooth_dose()
    body = ball(ref.shape, 10)
    m = image_metrics(ref, ref.copy(), (2.0, 2.0, 2.0), body)
    assert m["mae"] == 0.0
    assert m["psnr"] == math.inf  # documented: identical doses -> +inf, no warning, no error
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12)


def test_mae_and_psnr_of_known_offset_inside_body_only() -> None:
    ref = smooth_dose()
    body = ball(ref.shape, 9).astype(bool)
    pred = ref.astype(np.float64) + 2.0
    pred[~body] += 100.0  # outside the body: must not count
    assert mae(ref, pred, body) == pytest.approx(2.0, abs=1e-5)
    assert psnr(ref, pred, body, c_range=75.0) == pytest.approx(10 * math.log10(75.0**2 / 4.0), abs=1e-5)
    assert psnr(ref, pred, body, c_range=80.0) == pytest.approx(10 * math.log10(80.0**2 / 4.0), abs=1e-5)
    # Without a body mask the whole volume counts.
    assert mae(ref, pred) > 2.0


def test_ssim_of_constant_volumes_is_the_luminance_term() -> None:
    # Constant volumes: all local variances vanish, so SSIM = (2ab + c1) / (a^2 + b^2 + c1).
    a, b, c_range = 40.0, 30.0, 75.0
    u = np.full((10, 12, 12), a)
    v = np.full((10, 12, 12), b)
    c1 = (0.01 * c_range) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(u, v, (3.0, 2.0, 2.0), c_range=c_range) == pytest.approx(expected, rel=1e-12)


def test_ssim_map_matches_scikit_image_for_isotropic_voxels() -> None:
    ref = smooth_dose(seed=1)
    pred = ref + smooth_dose(seed=2, scale=8.0) - 4.0
    sigmas = ssim_sigmas((2.0, 2.0, 2.0))
    assert sigmas == (1.5, 1.5, 1.5)
    ours = ssim_map(ref, pred, sigmas, c_range=75.0)
    _, theirs = structural_similarity(ref.astype(np.float64), pred.astype(np.float64), data_range=75.0,
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    body = ball(ref.shape, 10).astype(bool)
    assert ssim(ref, pred, (2.0, 2.0, 2.0), body) == pytest.approx(theirs[body].mean(), abs=1e-10)
    assert 0.3 < theirs[body].mean() < 0.999


def test_ssim_window_is_isotropic_in_mm_and_crop_is_exact() -> None:
    # 3 mm slices, 1.5 mm pixels: 1.5 voxels in-plane = 2.25 mm, hence 0.75 voxels along z.
    assert ssim_sigmas((3.0, 1.5, 1.5)) == pytest.approx((0.75, 1.5, 1.5))
    assert ssim_sigmas((3.0, 1.5, 1.5), sigma_mm=6.0) == pytest.approx((2.0, 4.0, 4.0))
    ref = smooth_dose(shape=(20, 40, 40), seed=3)
    pred = ref * 1.05 + 0.5
    body = np.zeros(ref.shape, bool)
    body[6:14, 12:30, 10:25] = True  # the body's bounding box is cropped internally
    full = ssim_map(ref, pred, ssim_sigmas((3.0, 1.5, 1.5)))
    assert ssim(ref, pred, (3.0, 1.5, 1.5), body) == pytest.approx(full[body].mean(), abs=1e-12)


def test_bad_input_names_the_problem() -> None:
    ref = smooth_dose()
    with pytest.raises(InputError, match=r"\(24, 32, 27\).*\(24, 32, 28\)"):
        image_metrics(ref, ref[:, :, :-1], (2.0, 2.0, 2.0))
    with pytest.raises(InputError, match="body mask"):
        image_metrics(ref, ref, (2.0, 2.0, 2.0), body=np.zeros(ref.shape, np.uint8))
    with pytest.raises(InputError, match="c_range"):
        image_metrics(ref, ref, (2.0, 2.0, 2.0), c_range=0.0)

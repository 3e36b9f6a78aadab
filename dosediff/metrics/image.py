"""Image similarity of a predicted dose to the reference, inside the body mask (paper sec. 3.2).

MAE (Gy), PSNR (dB) and SSIM, each over the voxels of the body mask only:

- MAE  = mean |ref - pred| over the body.
- PSNR = 10 log10(c_range^2 / MSE), MSE over the body; c_range = 75 Gy in the paper.
  Identical doses in the body give MSE = 0 and PSNR = +inf (returned as float("inf"), no
  warning): a perfect prediction. Tables that average PSNR over cases must decide what to do
  with inf (the report drops nothing silently; it shows inf).
- SSIM: a local SSIM map (Wang et al. 2004, eq. 15 of the paper) with c1 = (0.01 c_range)^2 and
  c2 = (0.03 c_range)^2, local statistics weighted by a Gaussian window, averaged over the
  body voxels. Window: Gaussian, sigma 1.5 voxels in-plane (Wang et al.'s choice) and the same
  physical width (mm) along the slice axis, so anisotropic voxels get an isotropic window in
  mm; truncated at 3.5 sigma, reflecting boundaries, population (not sample) covariances.
  With isotropic voxels this is exactly skimage's structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=c_range) map. `sigma_mm` sets a
  physical width on every axis instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from dosediff.errors import input_error

SSIM_SIGMA_VOXELS = 1.5
SSIM_TRUNCATE = 3.5


def check_same_grid(reference: np.ndarray, other: np.ndarray, what: str, case: str | None = None) -> None:
    """Raise input_error unless `other` has the reference dose's (z, y, x) shape."""
    if tuple(np.shape(other)) != tuple(np.shape(reference)):
        raise input_error(
            what, f"shape {tuple(np.shape(other))} differs from the reference dose's {tuple(np.shape(reference))}",
            "the reference dose's grid (z, y, x)",
            "resample the prediction onto the reference (CT) grid before evaluating "
            "(dosediff predict writes it there)", case=case)


def _body_mask(reference: np.ndarray, body: np.ndarray | None, case: str | None) -> np.ndarray:
    if body is None:
        return np.ones(reference.shape, dtype=bool)
    check_same_grid(reference, body, "body mask", case)
    mask = np.asarray(body).astype(bool)
    if not mask.any():
        raise input_error("body mask", "no voxel is inside the body", "a non-empty body mask",
                          "check the body mask (threshold or contour) of this case", case=case)
    return mask


def mae(reference: np.ndarray, predicted: np.ndarray, body: np.ndarray | None = None,
        case: str | None = None) -> float:
    """Mean absolute dose error (Gy) over the body voxels."""
    check_same_grid(reference, predicted, "predicted dose", case)
    mask = _body_mask(reference, body, case)
    diff = np.asarray(reference, dtype=np.float64)[mask] - np.asarray(predicted, dtype=np.float64)[mask]
    return float(np.mean(np.abs(diff)))


def psnr(reference: np.ndarray, predicted: np.ndarray, body: np.ndarray | None = None,
         c_range: float = 75.0, case: str | None = None) -> float:
    """PSNR (dB) over the body voxels with peak c_range (Gy); +inf when the doses are identical."""
    check_same_grid(reference, predicted, "predicted dose", case)
    mask = _body_mask(reference, body, case)
    diff = np.asarray(reference, dtype=np.float64)[mask] - np.asarray(predicted, dtype=np.float64)[mask]
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(c_range * c_range / mse)


def ssim_sigmas(spacing_mm: Sequence[float], sigma_mm: float | None = None) -> tuple[float, float, float]:
    """Per-axis Gaussian sigma in voxels (z, y, x) for the SSIM window (see module docstring)."""
    spacing = np.asarray(spacing_mm, dtype=float)
    if sigma_mm is None:
        sigma_mm = SSIM_SIGMA_VOXELS * float(np.mean(spacing[1:]))
    return tuple(float(s) for s in sigma_mm / spacing)


def ssim_map(reference: np.ndarray, predicted: np.ndarray, sigmas: Sequence[float],
             c_range: float = 75.0) -> np.ndarray:
    """Local SSIM map (same shape as the inputs) with Gaussian-weighted local statistics."""
    u = np.asarray(reference, dtype=np.float64)
    v = np.asarray(predicted, dtype=np.float64)

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=list(sigmas), truncate=SSIM_TRUNCATE, mode="reflect")

    mu_u, mu_v = smooth(u), smooth(v)
    var_u = smooth(u * u) - mu_u * mu_u
    var_v = smooth(v * v) - mu_v * mu_v
    cov = smooth(u * v) - mu_u * mu_v
    c1 = (0.01 * c_range) ** 2
    c2 = (0.03 * c_range) ** 2
    num = (2 * mu_u * mu_v + c1) * (2 * cov + c2)
    den = (mu_u * mu_u + mu_v * mu_v + c1) * (var_u + var_v + c2)
    return num / den


def ssim(reference: np.ndarray, predicted: np.ndarray, spacing_mm: Sequence[float],
         body: np.ndarray | None = None, c_range: float = 75.0, sigma_mm: float | None = None,
         case: str | None = None) -> float:
    """Mean of the local SSIM map over the body voxels."""
    check_same_grid(reference, predicted, "predicted dose", case)
    mask = _body_mask(reference, body, case)
    sigmas = ssim_sigmas(spacing_mm, sigma_mm)
    # Only the body's bounding box plus the window radius influences body voxels: crop for speed.
    # Where the box reaches the volume edge the reflection happens at the same place as uncropped.
    radii = [int(SSIM_TRUNCATE * s + 0.5) for s in sigmas]
    nz = [np.nonzero(mask.any(axis=other))[0] for other in ((1, 2), (0, 2), (0, 1))]
    box = tuple(slice(max(0, int(idx[0]) - r), min(n, int(idx[-1]) + 1 + r))
                for idx, r, n in zip(nz, radii, mask.shape))
    smap = ssim_map(np.asarray(reference)[box], np.asarray(predicted)[box], sigmas, c_range)
    return float(np.mean(smap[mask[box]]))


def image_metrics(reference: np.ndarray, predicted: np.ndarray, spacing_mm: Sequence[float],
                  body: np.ndarray | None = None, c_range: float = 75.0,
                  sigma_mm: float | None = None, case: str | None = None) -> dict[str, float]:
    """{"mae": Gy, "psnr": dB, "ssim": -} inside the body (the whole volume when body is None)."""
    if c_range <= 0:
        raise input_error("setting evaluate.c_range", f"value {c_range}", "a positive dose range in Gy",
                          "set evaluate.c_range, e.g. 75", case=case)
    return {
        "mae": mae(reference, predicted, body, case),
        "psnr": psnr(reference, predicted, body, c_range, case),
        "ssim": ssim(reference, predicted, spacing_mm, body, c_range, sigma_mm, case),
    }

"""A simple but physical dose model for the phantom: coplanar parallel beams.

Each beam's fluence is its aperture in the beam's eye view (per slice, the target's extent
across the beam plus a margin) blurred by a Gaussian penumbra and a small, wide scatter
tail. Along each straight ray the dose falls off as exp(-mu * radiological depth), with an
exponential build-up near the surface and the inverse-square law about the isocentre. The
radiological depth is a cumulative sum of relative electron density on a grid rotated to
the beam (one resampling per beam, so the whole plan is a few vectorised array passes).
Positions in mm, patient coordinates (LPS); gantry angles in degrees, IEC 61217 for a
head-first supine patient: 0 = beam from anterior, 90 = from the patient's left.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dosediff.volume import Geometry

MU_PER_MM = 0.005  # effective linear attenuation of a 6 MV beam in water
SAD_MM = 1000.0  # source-axis distance for the inverse-square factor
PENUMBRA_SIGMA_MM = 3.5
APERTURE_MARGIN_MM = 6.0  # aperture beyond the target's projection
SCATTER_FRACTION = 0.05  # weight of the wide scatter tail in the fluence
SCATTER_SIGMA_MM = 15.0
SURFACE_DOSE = 0.45  # relative dose at zero depth (skin sparing)
BUILDUP_MM = 4.5  # e-folding depth of the build-up


def gantry_angles(n_beams: int) -> list[float]:
    """Equispaced gantry angles (degrees) starting at 0 (anterior)."""
    return [round(360.0 * i / n_beams, 2) for i in range(n_beams)]


def relative_density(ct_hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Electron density relative to water from HU (a two-segment calibration); 0 outside the body."""
    hu = ct_hu.astype(np.float32)
    rho = np.where(hu <= 0, 1 + hu / 1000, 1 + 0.6 * hu / 1000)  # bone 700 HU -> 1.42
    return np.where(body.astype(bool), np.clip(rho, 0, None), 0).astype(np.float32)  # (z, y, x)


def beam_dose(density: np.ndarray, body: np.ndarray, target: np.ndarray, geometry: Geometry, gantry_deg: float,
              isocenter_xy: tuple[float, float]) -> np.ndarray:
    """Dose (z, y, x) of one beam per unit fluence on the open field (arbitrary units).

    `density` is the relative electron density (z, y, x), `body` and `target` masks on the
    same grid; the geometry must have identity direction (the phantom's grids do).
    """
    nz, ny, nx = geometry.shape
    dz, dy, dx = geometry.spacing
    ox, oy, _ = geometry.origin
    theta = np.deg2rad(gantry_deg)
    d = np.array([-np.sin(theta), np.cos(theta)])  # beam direction (x, y)
    u = np.array([np.cos(theta), np.sin(theta)])  # across the beam (x, y)
    h = min(dx, dy)  # step of the beam grid, mm; grid nodes at multiples of h from the isocentre

    # Body voxels in beam coordinates: s across the beam, t along it (+ downstream), mm.
    kz, jy, ix = np.nonzero(body)
    rx, ry = ox + dx * ix - isocenter_xy[0], oy + dy * jy - isocenter_xy[1]  # (M,) mm from the isocentre
    s_vox, t_vox = rx * u[0] + ry * u[1], rx * d[0] + ry * d[1]
    dose = np.zeros(geometry.shape, dtype=np.float32)
    if kz.size == 0:
        return dose
    s0, t0 = np.floor(s_vox.min() / h) - 2, np.floor(t_vox.min() / h) - 2  # grid starts in air
    ns, nt = int(np.ceil(s_vox.max() / h) - s0) + 3, int(np.ceil(t_vox.max() / h) - t0) + 3
    s_grid, t_grid = h * (s0 + np.arange(ns)), h * (t0 + np.arange(nt))  # mm

    # Density on the beam grid (z, t, s); the cumulative sum along t is the radiological depth.
    t, s = np.meshgrid(t_grid, s_grid, indexing="ij")  # (nt, ns) mm
    col = (isocenter_xy[0] + s * u[0] + t * d[0] - ox) / dx  # continuous column index
    row = (isocenter_xy[1] + s * u[1] + t * d[1] - oy) / dy
    coords = np.broadcast_arrays(np.arange(nz, dtype=float)[:, None, None], row[None], col[None])
    rho_beam = ndimage.map_coordinates(density, coords, order=1, cval=0.0)  # (z, nt, ns)
    depth_beam = (np.cumsum(rho_beam, axis=1) - 0.5 * rho_beam) * h  # (z, nt, ns) mm water-equivalent

    s_idx, t_idx = s_vox / h - s0, t_vox / h - t0  # (M,) continuous grid indices
    depth = ndimage.map_coordinates(depth_beam, [kz, t_idx, s_idx], order=1)  # (M,) mm
    target_s = s_idx[target[kz, jy, ix].astype(bool)]
    fluence = beam_fluence(kz[target[kz, jy, ix].astype(bool)], target_s, nz, ns, h, dz)  # (z, ns)
    flu_vox = ndimage.map_coordinates(fluence, [kz, s_idx], order=1)  # (M,)
    buildup = 1 - (1 - SURFACE_DOSE) * np.exp(-depth / BUILDUP_MM)
    inverse_square = (SAD_MM / (SAD_MM + t_vox)) ** 2
    dose[kz, jy, ix] = flu_vox * np.exp(-MU_PER_MM * depth) * buildup * inverse_square
    return dose  # (z, y, x), 0 outside the body


def beam_fluence(target_k: np.ndarray, target_s: np.ndarray, nz: int, ns: int, h: float, dz: float) -> np.ndarray:
    """(z, ns) fluence across the beam per slice: the projection of the target voxels (slice
    indices `target_k`, lateral grid indices `target_s`), widened by the margin, blurred by
    penumbra and scatter."""
    aperture = np.zeros((nz, ns), dtype=bool)
    aperture[target_k, np.clip(np.round(target_s).astype(int), 0, ns - 1)] = True
    m_s = int(round(APERTURE_MARGIN_MM / h))
    m_z = int(round(APERTURE_MARGIN_MM / dz))
    aperture = ndimage.binary_dilation(aperture, structure=np.ones((2 * m_z + 1, 2 * m_s + 1), dtype=bool))
    ap = aperture.astype(np.float64)
    primary = ndimage.gaussian_filter(ap, sigma=(PENUMBRA_SIGMA_MM / dz, PENUMBRA_SIGMA_MM / h), mode="constant")
    tail = ndimage.gaussian_filter(ap, sigma=(SCATTER_SIGMA_MM / dz, SCATTER_SIGMA_MM / h), mode="constant")
    return (1 - SCATTER_FRACTION) * primary + SCATTER_FRACTION * tail  # (z, ns), 1 in a wide open field


def plan_dose(ct_hu: np.ndarray, body: np.ndarray, target: np.ndarray, geometry: Geometry, angles_deg: list[float],
              isocenter_xy: tuple[float, float], prescription_gy: float) -> np.ndarray:
    """Equal-weight sum of the beams, scaled so that the target's median dose is the
    prescription. Returns dose (z, y, x) float32 Gy, 0 outside the body."""
    density = relative_density(ct_hu, body)
    total = np.zeros(geometry.shape, dtype=np.float64)
    for angle in angles_deg:
        total += beam_dose(density, body, target, geometry, angle, isocenter_xy)
    median = float(np.median(total[target.astype(bool)]))
    return (total * (prescription_gy / median)).astype(np.float32)

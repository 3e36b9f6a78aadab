"""Signed distance maps of ROI masks (paper Sec. 2.3): PSDM (mm -> dm), MSDM (voxels), TSBDM.

Sign: positive inside the ROI, negative outside. All are computed in 3D on the grid they
are given (the original CT grid in the pipeline).

Boundary convention. A binary mask only says that the surface passes somewhere between an
inside and an outside voxel centre. For a voxel, let L be the Euclidean distance (with the
voxel spacing) to the nearest voxel centre on the other side of the mask. The true distance
to the surface lies in [max(0, L - 2h), L], h half the largest voxel dimension (on smooth
shapes the nearest opposite centre lies at most about one voxel beyond the surface), and we
return the middle of that interval: L - min(L/2, h). On isotropic grids this is L - s/2, the
surface halfway between voxel centres. Against a sphere's analytic distance the error is at
most half a voxel (largest dimension) on isotropic grids and on grids whose slices are the
thickest axis (tested: 1 mm and 2.5 x 1.2 x 1.2 mm); with in-plane pixels thicker than the
slices (OpenKBP, 2.5 x 3.9 x 3.9 mm) it reaches about 0.55 voxel on small spheres. The price
of this worst-case bound is a bias of up to -h far from the surface, where L itself is
nearly exact. The value is never 0 on a voxel (the surface lies between centres) and keeps
the sign of the mask. The authors' code uses L_inside - L_outside without the shift (up to a
whole voxel too large next to the surface).

Speed: the inside distance is computed only in the ROI's bounding box plus one voxel (exact:
that margin is all background); the exact EDT is ITK's Maurer transform (float32).
Empty masks give an all-zero channel (as the authors' code); a mask with no background in
reach measures the distance to the grid's edge.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from dosediff.preprocess.resample import bounding_box

MM_PER_DM = 100.0


def _nearest_centre_distance(region: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """float32 distance (mm) from each voxel of `region` to the nearest voxel centre outside it; 0 outside.

    ITK's signed Maurer transform of the complement gives exactly this on its background side
    (the nearest complement voxel is always on the complement's contour). It is an exact EDT
    like scipy's distance_transform_edt, about 4x faster on 128^3 (0.05 vs 0.21 s CPU), and
    SimpleITK is already a dependency; tests check it against scipy.
    """
    if region.all():  # nothing outside in reach: measure to the grid's edge
        padded = np.pad(region, 1, constant_values=False)
        return _nearest_centre_distance(padded, spacing)[1:-1, 1:-1, 1:-1]
    if not region.any():
        return np.zeros(region.shape, dtype=np.float32)
    image = sitk.GetImageFromArray((~region).view(np.uint8))  # object = complement of region
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # SimpleITK wants (x, y, z)
    edt = sitk.SignedMaurerDistanceMapImageFilter()
    edt.SetInsideIsPositive(False)  # region (the filter's outside) positive
    edt.SetUseImageSpacing(True)
    edt.SetSquaredDistance(True)  # squared, then numpy's sqrt: the same float32 values, ~4 % less time
    edt.SetBackgroundValue(0)
    out = sitk.GetArrayFromImage(edt.Execute(image)).astype(np.float32, copy=False)  # (Z, Y, X) mm^2
    np.maximum(out, 0, out=out)  # the complement's own side is <= 0: set to 0
    return np.sqrt(out, out=out)


def _to_surface(length: np.ndarray, half_voxel: float) -> np.ndarray:
    """Centre distance L -> distance to the surface: middle of [max(0, L - 2h), L] (in place)."""
    shift = np.multiply(length, np.float32(0.5))  # one temporary, reused: the same float32 values
    np.minimum(shift, np.float32(half_voxel), out=shift)
    length -= shift
    return length


def signed_distance_mm(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """(Z, Y, X) mask -> float32 signed distance to its surface in mm (positive inside)."""
    inside = np.asarray(mask).astype(bool, copy=False)
    spacing = tuple(float(s) for s in spacing_mm)
    box = bounding_box(inside)
    if box is None:
        return np.zeros(inside.shape, dtype=np.float32)
    half_voxel = max(spacing) / 2.0
    # outside: distance to the nearest ROI voxel centre, on the whole grid
    out = _to_surface(_nearest_centre_distance(~inside, spacing), half_voxel)
    np.negative(out, out=out)
    # inside: only the bounding box plus one voxel of background matters
    z0, z1, y0, y1, x0, x1 = box
    sl = (slice(max(z0 - 1, 0), z1 + 1), slice(max(y0 - 1, 0), y1 + 1), slice(max(x0 - 1, 0), x1 + 1))
    sub = _to_surface(_nearest_centre_distance(inside[sl], spacing), half_voxel)
    out[sl] += sub  # the two parts never overlap: each is 0 on the other side
    return out


def psdm(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Physical signed distance map in decimetres (float32), positive inside."""
    out = signed_distance_mm(mask, spacing_mm)
    out /= np.float32(MM_PER_DM)
    return out


def msdm(mask: np.ndarray) -> np.ndarray:
    """Matrix-space signed distance map in voxels (float32, unit spacing), positive inside.
    Stored raw; the paper divides it by 100 for training (done at training time)."""
    return signed_distance_mm(mask, (1.0, 1.0, 1.0))


def tsbdm(mask: np.ndarray) -> np.ndarray:
    """Transformed signed boundary distance map (Yue et al., Radiother Oncol 170:198, 2022), float32 in (0, 1].

    Our reading, not checked against Yue et al.'s text or code (neither was available to us): the
    matrix-space signed distance d is instance-normalised by the ROI's largest inside
    distance r (t = d / r), then transformed voxel-wise so that inside values stay large and
    outside values decay to 0: 0.5 + 0.5 t inside (0.5 at the boundary, 1 at the ROI's
    deepest voxel) and 0.5 exp(t) outside (falls to ~0 a few ROI radii away). This has the
    properties the DoseDiff paper describes: instance-wise normalisation, limited dynamic
    range, far background quickly zeroed. Empty mask -> all zeros.
    """
    d = msdm(mask)
    radius = float(d.max())
    if radius <= 0:  # empty mask
        return d
    t = d / np.float32(radius)
    return np.where(t >= 0, 0.5 + 0.5 * t, 0.5 * np.exp(t)).astype(np.float32)


_FUNCS = {"psdm": lambda m, s: psdm(m, s), "msdm": lambda m, s: msdm(m), "tsbdm": lambda m, s: tsbdm(m)}


def distance_maps(masks: list[np.ndarray | None], spacing_mm: tuple[float, float, float],
                  representations: list[str], shape: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
    """Per representation, a (K, Z, Y, X) float32 stack over the ROI list; a missing (None) or
    empty ROI gives an all-zero channel. `shape` is needed only when every ROI is missing."""
    shape = shape or next((m.shape for m in masks if m is not None), None)
    if shape is None:
        raise ValueError("distance_maps needs the grid shape when every ROI is missing")
    out: dict[str, np.ndarray] = {}
    for rep in representations:
        stack = np.zeros((len(masks), *shape), dtype=np.float32)
        for k, mask in enumerate(masks):
            if mask is not None and mask.any():
                stack[k] = _FUNCS[rep](mask, spacing_mm)
        out[rep] = stack
    return out

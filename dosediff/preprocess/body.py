"""Body mask from the CT: threshold, largest 3D connected component, holes filled per slice."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from dosediff.preprocess.resample import bounding_box


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component of a boolean volume (all False when the input is empty)."""
    labels, n = ndi.label(mask)  # (Z, Y, X) int32
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())  # sizes[0] is the background
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed background in every axial slice (2D, so air in the airway or sinuses
    open to the outside in 3D is still filled where a slice encloses it)."""
    out = mask.copy()
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    for z in zs:
        out[z] = ndi.binary_fill_holes(mask[z])
    return out


def body_mask(ct_hu: np.ndarray, threshold_hu: float) -> np.ndarray:
    """(Z, Y, X) HU -> uint8 body mask: voxels above threshold_hu, largest 3D component,
    holes filled per axial slice."""
    above = ct_hu > threshold_hu  # (Z, Y, X) bool
    out = np.zeros(ct_hu.shape, dtype=np.uint8)
    box = bounding_box(above)
    if box is None:
        return out
    sl = (slice(box[0], box[1]), slice(box[2], box[3]), slice(box[4], box[5]))  # work in the box only
    out[sl] = fill_holes_per_slice(largest_component(above[sl]))
    return out

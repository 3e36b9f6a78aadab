"""Body mask from the CT: threshold, largest 3D connected component, holes filled per slice.

Computed with SimpleITK (already loaded for the NIfTI files), not scipy.ndimage: importing
scipy.ndimage costs ~0.2 s CPU per `dosediff preprocess`, more than the mask itself. The
results equal scipy's ndimage.label (6-connected) and binary_fill_holes (4-connected
background) voxel for voxel; tests compare them.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from dosediff.preprocess.resample import bounding_box


def _image(mask: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=bool).view(np.uint8))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest 6-connected component of a boolean volume (all False when the input is empty);
    of equal largest ones, the one holding the first voxel in C order (as scipy's labels)."""
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(_image(mask), False))  # face-connected
    sizes = np.bincount(labels.ravel())  # sizes[0] is the background
    if sizes.size <= 2:
        return labels > 0
    sizes[0] = 0
    largest = np.flatnonzero(sizes == sizes.max())
    if largest.size > 1:  # a tie: the rule must not depend on how ITK numbers components
        flat = labels.ravel()
        largest = flat[np.flatnonzero(np.isin(flat, largest))[:1]]
    return labels == int(largest[0])


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed background in every axial slice (2D, so air in the airway or sinuses
    open to the outside in 3D is still filled where a slice encloses it). Background connects
    through edges only (4-neighbours), as in scipy's binary_fill_holes.

    One 3D labelling of the background with an all-foreground slice between neighbouring
    slices (so components stay within a slice): a hole is a component that reaches no edge
    of its slice."""
    z = mask.shape[0]
    spaced = np.zeros((2 * z - 1, *mask.shape[1:]), dtype=bool)
    spaced[::2] = ~mask
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(_image(spaced), False))[::2]  # (Z, Y, X)
    edges = np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(), labels[:, :, 0].ravel(),
                            labels[:, :, -1].ravel()])
    open_to_edge = np.zeros(int(labels.max()) + 1, dtype=bool)
    open_to_edge[edges] = True
    open_to_edge[0] = True  # label 0: the mask itself
    return mask | ~open_to_edge[labels]


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

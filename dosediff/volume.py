"""The Case contract: the one place where geometry is defined.

Arrays are (z, y, x) with z the slice axis; spacing is in mm in the same order.
Origin and direction follow SimpleITK: origin is the physical (x, y, z) position of
voxel (0, 0, 0) in patient coordinates (LPS, mm); direction is the 3x3 matrix whose
columns are the physical directions of the index axes (x, y, z), flattened row-major.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import SimpleITK as sitk

# Doses above this are a damaged scaling, not a dose (brachytherapy peaks stay below); here, not
# in io/rtdose.py, so that the OpenKBP reader need not import pydicom and scipy to check it.
MAX_DOSE_GY = 1e4


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume; `shape` and `spacing` in (z, y, x) order."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        if len(self.shape) != 3 or len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError(f"Geometry needs 3 values per axis, got {self}")
        if len(self.direction) != 9:
            raise ValueError(f"Geometry direction needs 9 values, got {self.direction}")
        if min(self.spacing) <= 0:
            raise ValueError(f"Geometry spacing must be positive, got {self.spacing}")

    @property
    def matrix(self) -> np.ndarray:
        """3x3 direction matrix; column i is the physical direction of index axis i (x, y, z)."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_world(self, zyx: np.ndarray) -> np.ndarray:
        """Continuous (..., 3) indices in (z, y, x) order -> physical (..., 3) points (x, y, z) mm."""
        ijk = np.asarray(zyx, dtype=float)[..., ::-1] * np.asarray(self.spacing[::-1])
        return ijk @ self.matrix.T + np.asarray(self.origin)

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Physical (..., 3) points (x, y, z) mm -> continuous (..., 3) indices in (z, y, x) order."""
        rel = np.asarray(xyz, dtype=float) - np.asarray(self.origin)
        ijk = rel @ np.linalg.inv(self.matrix).T / np.asarray(self.spacing[::-1])
        return ijk[..., ::-1]

    def to_dict(self) -> dict:
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(**{f.name: d[f.name] for f in fields(cls)})  # __post_init__ makes them tuples

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        size = image.GetSize()  # (x, y, z)
        return cls(shape=(size[2], size[1], size[0]), spacing=tuple(image.GetSpacing()[::-1]),
                   origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection()))

    def to_sitk(self, array: np.ndarray) -> sitk.Image:
        """Wrap a (z, y, x) array of this geometry as a SimpleITK image."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match geometry shape {self.shape}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(self.spacing[::-1])
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def same_grid(self, other: Geometry, tol_mm: float = 1e-3) -> bool:
        """True when both geometries describe the same voxel grid (within tol_mm)."""
        return (self.shape == other.shape and np.allclose(self.spacing, other.spacing, atol=tol_mm)
                and np.allclose(self.origin, other.origin, atol=tol_mm)
                and np.allclose(self.direction, other.direction, atol=1e-6))


@dataclass
class Case:
    """One patient on the CT grid: CT (HU, int16), dose (Gy, float32), ROI masks (uint8).

    `masks` holds the dataset's canonical ROI names present for this case, in the dataset's
    order; a ROI the dataset lists but the case lacks is simply absent. `possible_dose` is
    OpenKBP's possible-dose mask (None elsewhere). `meta` is free of patient-identifying
    DICOM fields: it holds the source kind and the UIDs needed to reference the source CT
    when a predicted dose is exported as RTDOSE.
    """

    case_id: str
    geometry: Geometry
    ct: np.ndarray
    dose: np.ndarray | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    possible_dose: np.ndarray | None = None
    prescription_gy: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.geometry.shape
        for name, arr in [("ct", self.ct), ("dose", self.dose), ("possible_dose", self.possible_dose)]:
            if arr is not None and tuple(arr.shape) != shape:
                raise ValueError(f"case {self.case_id}: {name} shape {arr.shape} != CT grid {shape}")
        for name, arr in self.masks.items():
            if tuple(arr.shape) != shape:
                raise ValueError(f"case {self.case_id}: ROI {name} shape {arr.shape} != CT grid {shape}")

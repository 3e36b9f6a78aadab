"""RTDOSE -> dose (Gy) + Geometry, and linear resampling of a dose onto another grid.

DICOM PS3.3 C.8.8.3 (RT Dose Module): dose = stored integers x DoseGridScaling; PixelSpacing
is [row, column]; GridFrameOffsetVector is relative (first value 0) or absolute (first value =
the first frame's position along the slice normal) and may decrease.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from scipy.ndimage import map_coordinates

from dosediff.errors import input_error, warn
from dosediff.io.dicom_ct import direction_of, orientation, step_tolerance
from dosediff.io.dicom_tags import floats, integer, number, pixels, spacing_yx
from dosediff.volume import MAX_DOSE_GY, Geometry

# DoseSummationType values that are not the whole plan's dose, and what they mean.
SUMMATION_MEANING = {
    "BEAM": "the dose of one beam only, not the whole plan",
    "FRACTION": "the dose of one fraction; the plan's total is this times the number of fractions",
    "BEAM_SESSION": "the dose of one beam in one session",
    "FRACTION_SESSION": "the dose of one fraction session",
    "BRACHY": "brachytherapy dose of one application setup",
    "BRACHY_SESSION": "brachytherapy dose of one session",
    "CONTROL_POINT": "the dose of one control point",
    "RECORD": "a delivered-dose record, not the planned dose",
    "PLAN_OVERVIEW": "a summary of plans",
}
ABSOLUTE_TOL_MM = 0.1  # absolute offsets: first value vs ImagePositionPatient (decimal-string rounding)
HIGH_DOSE_GY = 200.0  # external-beam plans stay below; higher is warned
EDGE_SNAP = 1e-4  # voxels: points this close outside the source grid count as on its edge


def check_rtdose_header(ds: Dataset, path: Path, case_id: str) -> dict:
    """Check modality, units and scaling without touching pixel data; return the references."""
    if ds.get("Modality") != "RTDOSE":
        raise input_error(path, f"Modality {ds.get('Modality')}", "RTDOSE", "pass the dose file", case=case_id)
    units = str(ds.get("DoseUnits", "") or "").strip().upper()
    if units != "GY":
        raise input_error(path, f"DoseUnits {units or 'missing'}", "GY (absolute dose in gray)",
                          "export the dose in absolute units (Gy) from the planning system; a RELATIVE "
                          "dose has no known scale", case=case_id)
    scaling = number(ds, "DoseGridScaling", path, case_id)
    if scaling is None:
        raise input_error(path, "no DoseGridScaling (3004,000E)",
                          "the factor that turns the stored integers into Gy",
                          "export the RTDOSE again with its dose grid scaling; the stored integers alone "
                          "have no unit", case=case_id)
    if scaling <= 0:
        raise input_error(path, f"DoseGridScaling {scaling:g}", "a positive number",
                          "export the RTDOSE again from the planning system", case=case_id)
    dose_type = str(ds.get("DoseType", "") or "").strip().upper()
    if dose_type == "ERROR":
        raise input_error(path, "DoseType ERROR (a dose difference, not a dose)", "DoseType PHYSICAL",
                          "export the planned (physical) dose", case=case_id)
    if dose_type == "EFFECTIVE":
        warn(path, "DoseType EFFECTIVE (biologically weighted dose)", "used as Gy as is", case=case_id)
    summation = str(ds.get("DoseSummationType", "") or "").strip().upper()
    if summation not in ("PLAN", "MULTI_PLAN"):
        meaning = SUMMATION_MEANING.get(summation, "not declared" if not summation else "an unusual value")
        warn(path, f"DoseSummationType {summation or 'missing'}: {meaning}",
             "used as the case's dose; export the PLAN dose instead if this is not the total planned dose",
             case=case_id)
    plans = [str(item.ReferencedSOPInstanceUID) for item in ds.get("ReferencedRTPlanSequence", [])
             if item.get("ReferencedSOPInstanceUID")]
    return {
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "referenced_plan_uid": plans[0] if plans else None,
        "dose_summation_type": summation,
        "dose_type": dose_type,
    }


def frame_positions(ds: Dataset, n_frames: int, normal: np.ndarray, ipp: np.ndarray,
                    path: Path, case_id: str) -> np.ndarray:
    """Positions (n_frames,) of the frames along the slice normal, relative to ImagePositionPatient (mm)."""
    if ds.get("GridFrameOffsetVector") is None and n_frames == 1:
        return np.zeros(1)
    offsets = floats(ds, "GridFrameOffsetVector", n_frames, path, case_id)  # one per frame, mm
    if abs(offsets[0]) <= 1e-6:
        return offsets  # relative form
    start = float(ipp @ normal)
    if abs(offsets[0] - start) > ABSOLUTE_TOL_MM:
        raise input_error(path, f"first GridFrameOffsetVector value {offsets[0]:g} mm",
                          f"0 (relative offsets) or {start:g} mm, the ImagePositionPatient position "
                          "along the slice normal (absolute positions)",
                          "export the RTDOSE again; its frame positions are inconsistent", case=case_id)
    return offsets - offsets[0]  # absolute form -> relative; the first frame lies at ImagePositionPatient


def rtdose_from_dataset(ds: Dataset, path: Path, case_id: str) -> tuple[np.ndarray, Geometry, dict]:
    """An RTDOSE dataset (read by read_dataset) -> dose (z, y, x) float32 Gy, its Geometry (frames
    sorted along the slice normal) and references: frame_of_reference_uid, referenced_plan_uid
    (None if absent), dose_summation_type and dose_type."""
    refs = check_rtdose_header(ds, path, case_id)
    row, col, normal = orientation(ds, path, case_id)
    ipp = floats(ds, "ImagePositionPatient", 3, path, case_id)
    spacing = spacing_yx(ds, path, case_id)  # [row spacing (y), column spacing (x)] mm
    raw = pixels(ds, path, case_id)
    n_frames = integer(ds, "NumberOfFrames", path, case_id, default=1, hi=4096)
    raw = raw[None] if raw.ndim == 2 else raw  # (frames, rows, columns)
    rows, cols = integer(ds, "Rows", path, case_id), integer(ds, "Columns", path, case_id)
    if raw.shape != (n_frames, rows, cols):
        raise input_error(path, f"pixel array of shape {raw.shape}",
                          f"(NumberOfFrames, Rows, Columns) = ({n_frames}, {rows}, {cols})",
                          "export the RTDOSE again", case=case_id)
    positions = frame_positions(ds, n_frames, normal, ipp, path, case_id)
    order = np.argsort(positions, kind="stable")  # increasing along the normal
    positions, raw = positions[order], raw[order]
    if n_frames > 1:
        diffs = np.diff(positions)
        usual = float(np.median(diffs))
        if np.any(diffs < 1e-3) or np.any(np.abs(diffs - usual) > step_tolerance(usual)):
            raise input_error(path, f"GridFrameOffsetVector steps range {diffs.min():.3f}-{diffs.max():.3f} mm",
                              "uniformly spaced, distinct frames", "export the dose on a regular grid "
                              "(uniform frame spacing) from the planning system", case=case_id)
        step = float((positions[-1] - positions[0]) / (n_frames - 1))
    else:  # one frame: the step only matters for volumes, take the nominal thickness
        thickness = number(ds, "SliceThickness", path, case_id, default=0.0, lo=0.0, hi=1e3)
        step = thickness if thickness > 0 else float(min(spacing))
    dose = scaled_dose(raw, number(ds, "DoseGridScaling", path, case_id), path, case_id)  # (z, y, x) Gy
    geometry = Geometry(shape=dose.shape, spacing=(step, float(spacing[0]), float(spacing[1])),
                        origin=tuple(ipp + positions[0] * normal), direction=direction_of(row, col, normal))
    return dose, geometry, refs


def scaled_dose(raw: np.ndarray, scaling: float, path: Path, case_id: str) -> np.ndarray:
    """Stored integers x DoseGridScaling -> float32 Gy; an absurd maximum is refused, a high
    one warned, naming the value (a damaged scaling would otherwise train on nonsense)."""
    dose = raw.astype(np.float64) * scaling  # (z, y, x) Gy
    top = float(dose.max()) if dose.size else 0.0
    if not np.isfinite(top) or top > MAX_DOSE_GY or float(dose.min()) < 0:
        raise input_error(path, f"doses from {float(dose.min()):.4g} to {top:.4g} Gy (DoseGridScaling {scaling:g})",
                          f"doses in [0, {MAX_DOSE_GY:g}] Gy", "export the RTDOSE again; its scaling or "
                          "pixel data are damaged", case=case_id)
    if top > HIGH_DOSE_GY:
        warn(path, f"maximum dose {top:.4g} Gy (DoseGridScaling {scaling:g})",
             f"above {HIGH_DOSE_GY:g} Gy; used as is, check the export", case=case_id)
    return dose.astype(np.float32)


def _index_affine(src: Geometry, dst: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with src_index = A @ dst_index + b, indices in (z, y, x) order."""
    b = src.world_to_index(dst.index_to_world(np.zeros(3)))
    a = np.stack([src.world_to_index(dst.index_to_world(e)) - b for e in np.eye(3)], axis=1)
    return a, b


def resample_to(dose: np.ndarray, src: Geometry, dst: Geometry) -> np.ndarray:
    """Dose (z, y, x) on `src` -> float32 (z, y, x) on `dst`: trilinear inside the source grid, 0 outside.

    Points within EDGE_SNAP voxel of the source grid's outer voxel centres count as on them,
    so a destination grid that coincides with the source's edge is not zeroed by round-off.
    """
    dose = np.asarray(dose, dtype=np.float32)
    if dose.shape != src.shape:
        raise ValueError(f"dose shape {dose.shape} does not match its geometry {src.shape}")
    if src.same_grid(dst, tol_mm=1e-4):
        return dose.copy()
    a, b = _index_affine(src, dst)
    upper = np.asarray(src.shape, dtype=float) - 1
    if np.allclose(a - np.diag(np.diag(a)), 0, atol=1e-9):  # axes aligned: separable, much faster
        return _resample_separable(dose, np.diag(a), b, dst.shape)
    out = np.zeros(dst.shape, dtype=np.float32)  # (z, y, x) Gy
    # Destination slices that can touch the source grid (bounding box of its corners).
    corners = np.array([[i, j, k] for i in (0, upper[0]) for j in (0, upper[1]) for k in (0, upper[2])])
    dst_corners = np.linalg.solve(a, (corners - b).T).T  # (8, 3) dst indices
    z_lo = max(int(np.floor(dst_corners[:, 0].min() - 1)), 0)
    z_hi = min(int(np.ceil(dst_corners[:, 0].max() + 1)), dst.shape[0] - 1)
    jj, ii = np.meshgrid(np.arange(dst.shape[1]), np.arange(dst.shape[2]), indexing="ij")  # (y, x)
    plane = a[:, 1:2, None] * jj + a[:, 2:3, None] * ii + b[:, None, None]  # (3, y, x) src index
    for k in range(z_lo, z_hi + 1):
        coords = plane + a[:, 0, None, None] * k  # (3, y, x) src index of dst slice k
        inside = np.ones(coords.shape[1:], dtype=bool)
        for axis in range(3):
            c = coords[axis]
            inside &= (c >= -EDGE_SNAP) & (c <= upper[axis] + EDGE_SNAP)
            coords[axis] = np.clip(c, 0, upper[axis])
        if inside.any():
            values = map_coordinates(dose, coords[:, inside], order=1, mode="nearest")
            out[k][inside] = values
    return out


def _axis_weights(scale: float, offset: float, n_dst: int, n_src: int) -> tuple[np.ndarray, ...]:
    """Per destination index along one axis: lower source index, upper index, weight of upper, inside."""
    c = scale * np.arange(n_dst) + offset  # (n_dst,) source index
    inside = (c >= -EDGE_SNAP) & (c <= n_src - 1 + EDGE_SNAP)
    c = np.clip(c, 0, n_src - 1)
    lo = np.minimum(np.floor(c).astype(np.int64), max(n_src - 2, 0))
    hi = np.minimum(lo + 1, n_src - 1)
    return lo, hi, (c - lo).astype(np.float32), inside


def _resample_separable(dose: np.ndarray, scale: np.ndarray, offset: np.ndarray,
                        shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear interpolation as three 1D linear passes (grids with parallel axes)."""
    out = dose
    keep = []
    for axis in range(3):
        lo, hi, w, inside = _axis_weights(float(scale[axis]), float(offset[axis]), shape[axis], dose.shape[axis])
        view = [None, None, None]
        view[axis] = slice(None)
        w = w[tuple(view)]
        out = np.take(out, lo, axis=axis) * (1 - w) + np.take(out, hi, axis=axis) * w
        keep.append(inside)
    inside = keep[0][:, None, None] & keep[1][None, :, None] & keep[2][None, None, :]
    return np.where(inside, out, 0).astype(np.float32)  # (z, y, x) on the destination grid

"""RTSTRUCT -> contours in patient mm, and contours -> a voxel mask on any grid.

Rasterisation (checked voxel for voxel against the IBSI reference masks): each planar contour goes to the slice nearest to it along the
grid's slice axis; in-plane, a voxel is inside when its centre is inside the polygon by the
even-odd rule, so several contours on one slice combine by XOR (holes).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dosediff.errors import input_error, warn
from dosediff.volume import Geometry

CONTOUR_DATA = 0x30060050


def rtstruct_frame_of_reference(ds: Dataset, path: Path, case_id: str) -> str:
    """The FrameOfReferenceUID the structure set's ROIs are defined in."""
    per_roi = {str(item.ReferencedFrameOfReferenceUID) for item in ds.get("StructureSetROISequence", [])
               if item.get("ReferencedFrameOfReferenceUID")}
    listed = [str(item.FrameOfReferenceUID) for item in ds.get("ReferencedFrameOfReferenceSequence", [])
              if item.get("FrameOfReferenceUID")]
    if len(per_roi) > 1:
        raise input_error(path, f"ROIs defined in {len(per_roi)} frames of reference {sorted(per_roi)}",
                          "one FrameOfReferenceUID for the whole structure set",
                          "export the structures of one image set only", case=case_id)
    if per_roi:
        return per_roi.pop()
    if listed:
        return listed[0]
    raise input_error(path, "no FrameOfReferenceUID (neither in StructureSetROISequence nor in "
                      "ReferencedFrameOfReferenceSequence)", "the UID of the CT's frame of reference",
                      "re-export the RTSTRUCT from the planning system", case=case_id)


def referenced_series_uids(ds: Dataset) -> set[str]:
    """CT SeriesInstanceUIDs the structure set names (may be empty: the reference is optional)."""
    uids = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if series.get("SeriesInstanceUID"):
                    uids.add(str(series.SeriesInstanceUID))
    return uids


def rtstruct_from_dataset(ds: Dataset, path: Path, case_id: str) -> tuple[dict[str, list[np.ndarray]], str]:
    """An RTSTRUCT dataset (read by read_dataset) -> ROI name -> list of (N, 3) contour points
    (x, y, z) mm, and the FrameOfReferenceUID. POINT and open contours are skipped (one warning
    per file); a ROI without contours maps to an empty list."""
    if ds.get("Modality") != "RTSTRUCT":
        raise input_error(path, f"Modality {ds.get('Modality')}", "RTSTRUCT", "pass the structure set file",
                          case=case_id)
    frame_uid = rtstruct_frame_of_reference(ds, path, case_id)
    names: dict[int, str] = {}
    for item in ds.get("StructureSetROISequence", []):
        number = _roi_number(item, "ROINumber", path, case_id)
        names[number] = str(item.get("ROIName", "")).strip() or f"ROI {number}"
    by_number: dict[int, list[np.ndarray]] = {n: [] for n in names}
    skipped: dict[str, set[str]] = {}
    dropped: dict[str, int] = {}
    for roi in ds.get("ROIContourSequence", []):
        number = _roi_number(roi, "ReferencedROINumber", path, case_id)
        if number not in names:
            raise input_error(path, f"contours for ROI number {number}, which StructureSetROISequence does not "
                              "define", "every ROIContourSequence item to name a defined ROI",
                              "re-export the RTSTRUCT from the planning system", case=case_id)
        for contour in roi.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).strip().upper()
            if kind != "CLOSED_PLANAR":
                skipped.setdefault(kind, set()).add(names[number])
                continue
            points = contour_points(contour, names[number], path, case_id)  # (N, 3) x, y, z mm
            if len(points) >= 3 and np.isfinite(points).all():
                by_number[number].append(points)
            else:  # fewer points enclose no area; NaN or inf points have no place
                dropped[names[number]] = dropped.get(names[number], 0) + 1
    if dropped:
        warn(path, f"contours with fewer than 3 points or non-finite coordinates (count per ROI: {dropped})",
             "dropped", case=case_id)
    for kind, rois in skipped.items():
        why = "points mark positions and enclose no volume" if kind == "POINT" else "open contours enclose no area"
        warn(path, f"{kind} contours in ROIs {sorted(rois)}", f"skipped ({why})", case=case_id)

    rois: dict[str, list[np.ndarray]] = {}
    for number, contours in by_number.items():
        name = names[number]
        if name in rois and rois[name] and contours:
            raise input_error(path, f"two contoured ROIs named {name!r}", "unique ROI names",
                              "rename or delete one of them in the planning system and export again",
                              case=case_id)
        if name not in rois or contours:
            rois[name] = contours
    return rois, frame_uid


def contour_points(contour: Dataset, roi: str, path: Path, case_id: str) -> np.ndarray:
    """ContourData as (N, 3) floats. Values over 64 KB are stored as UN in explicit VR files
    (the DS length field is 16 bits); pydicom cannot always convert those, so the raw bytes
    are decoded here as the DS text they are."""
    elem = contour.get_item(CONTOUR_DATA) if CONTOUR_DATA in contour else None
    if elem is None:
        return np.zeros((0, 3))
    raw = getattr(elem, "value", None)
    try:
        if isinstance(raw, (bytes, bytearray)):
            text = bytes(raw).decode("ascii").strip(" \x00")
            values = [float(v) for v in text.split("\\") if v.strip()]
        else:
            with warnings.catch_warnings(action="ignore"):
                data = contour.ContourData
            values = [] if data is None else ([float(data)] if np.ndim(data) == 0 and not isinstance(data, list)
                                               else [float(v) for v in data])
    except (TypeError, ValueError, UnicodeDecodeError):
        raise input_error(path, f"ROI {roi!r}: ContourData that is not a list of numbers", "x, y, z triplets in mm",
                          "re-export the RTSTRUCT", case=case_id) from None
    if len(values) % 3:
        raise input_error(path, f"ROI {roi!r}: ContourData of {len(values)} numbers", "x, y, z triplets",
                          "re-export the RTSTRUCT", case=case_id)
    return np.asarray(values, dtype=float).reshape(-1, 3)


def _roi_number(item: Dataset, keyword: str, path: Path, case_id: str) -> int:
    try:
        return int(item.get(keyword))
    except Exception:  # absent, not a number, or a damaged value pydicom cannot convert
        raise input_error(path, f"a ROI item with {keyword} {item.get(keyword)!r}", "an integer ROI number",
                          "re-export the RTSTRUCT from the planning system", case=case_id) from None


def rasterize_roi(contours: list[np.ndarray], geometry: Geometry) -> np.ndarray:
    """Voxel mask (z, y, x) uint8 of closed planar contours ((N, 3) x, y, z mm) on `geometry`.

    Each contour is assigned to the slice nearest its mean position along the slice axis and
    skipped when that is more than half a slice outside the grid; in-plane, voxel centres
    inside by the even-odd rule (several contours on a slice combine by XOR).
    """
    nz, ny, nx = geometry.shape
    per_slice: dict[int, list[np.ndarray]] = {}
    for points in contours:
        idx = geometry.world_to_index(np.asarray(points, dtype=float).reshape(-1, 3))  # (N, 3) z, y, x
        # Round-off guard: points on voxel centres must not flip sides across a boundary.
        idx = np.round(idx, 6)
        k = int(np.floor(np.mean(idx[:, 0]) + 0.5))
        if 0 <= k < nz and len(idx) >= 3:
            per_slice.setdefault(k, []).append(idx[:, 1:])
    mask = np.zeros(geometry.shape, dtype=np.uint8)  # (z, y, x)
    for k, polygons in per_slice.items():
        mask[k] = even_odd_fill(polygons, ny, nx)
    return mask


def even_odd_fill(polygons: list[np.ndarray], ny: int, nx: int) -> np.ndarray:
    """(ny, nx) uint8: pixel centres (integer y, x) inside the polygons ((N, 2) y, x) by the even-odd rule.

    Scanline fill: every edge crossing row r toggles the parity of all pixels from its crossing
    point to the right; the running sum's parity is the inside test. Edges cover rows r with
    min(y0, y1) <= r < max(y0, y1), and a crossing at x toggles pixels with column >= x.
    """
    toggles = np.zeros(ny * (nx + 1), dtype=np.int64)
    for poly in polygons:
        y0, x0 = poly[:, 0], poly[:, 1]
        y1, x1 = np.roll(y0, -1), np.roll(x0, -1)  # closing edge included
        r_lo = np.maximum(np.ceil(np.minimum(y0, y1)), 0)
        r_hi = np.minimum(np.ceil(np.maximum(y0, y1)) - 1, ny - 1)
        count = np.maximum(r_hi - r_lo + 1, 0).astype(np.int64)  # rows each edge crosses
        edges = np.repeat(np.arange(len(y0)), count)
        if edges.size == 0:
            continue
        start = np.repeat(np.cumsum(count) - count, count)
        rows = r_lo[edges] + (np.arange(edges.size) - start)  # (M,) crossing rows
        t = (rows - y0[edges]) / (y1[edges] - y0[edges])
        x = x0[edges] + t * (x1[edges] - x0[edges])  # (M,) crossing columns
        cols = np.clip(np.ceil(np.round(x, 6)), 0, nx).astype(np.int64)
        toggles += np.bincount(rows.astype(np.int64) * (nx + 1) + cols, minlength=toggles.size)
    parity = np.cumsum(toggles.reshape(ny, nx + 1), axis=1)[:, :nx] & 1
    return parity.astype(np.uint8)

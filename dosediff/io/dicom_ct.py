"""CT series -> HU volume + Geometry, and the DICOM file helpers the RT readers share.

Geometry (DICOM PS3.3 C.7.6.2, Image Plane Module): slices are sorted by ImagePositionPatient projected on the slice
normal (row x column direction of ImageOrientationPatient); the slice spacing comes from the
positions, never from SliceThickness or SliceLocation; HU from RescaleSlope/Intercept.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dosediff.errors import input_error, warn
from dosediff.io.dicom_tags import check_volume_size, floats, integer, number, pixels, spacing_yx
from dosediff.io.privacy import hide_patient_fields
from dosediff.volume import Geometry

log = logging.getLogger("dosediff")

UNDEFINED_LENGTH = 0xFFFFFFFF
STEP_TOL_MM = 0.01  # slice steps may differ by this much (or by STEP_TOL_REL of the step)
STEP_TOL_REL = 0.01
TILT_TOL = 1e-3  # in-plane drift per mm along the normal (about 0.06 degrees)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


def read_dataset(path: Path, case_id: str) -> Dataset:
    """Read one DICOM file completely; a non-DICOM, damaged or truncated file is an input error."""
    path = Path(path)
    fix = f"remove {path.name} from the case folder, or replace it with a complete copy from the export"
    try:
        with warnings.catch_warnings(action="ignore"):
            ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = _read_without_preamble(path)
        if ds is None:
            raise input_error(path, "not a DICOM file", "only DICOM files (CT, RTSTRUCT, RTDOSE, RTPLAN) "
                              "in a case folder", f"remove {path.name} from the case folder", case=case_id) from None
    except Exception as exc:  # pydicom raises OSError, EOFError, ValueError... on damaged files
        # Only the exception type: pydicom's message may quote header values.
        raise input_error(path, f"unreadable DICOM file ({type(exc).__name__} while parsing; it ends early "
                          "or is damaged)", "a complete DICOM file", fix, case=case_id) from None
    hide_patient_fields(ds)  # file names of many exports carry the ID: kept out of messages
    short = _short_element(ds)
    if short is not None:
        tag, got, want = short
        raise input_error(path, f"truncated DICOM file: element {tag} holds {got} of its {want} bytes",
                          "a complete DICOM file", fix, case=case_id)
    _check_elements(ds, path, case_id)
    return ds


def _check_elements(ds: Dataset, path: Path, case_id: str) -> None:
    """Convert every top-level element now, so a damaged value (unknown VR, bad number) is an
    input error naming its tag here rather than a traceback wherever it is first used."""
    for tag in list(ds.keys()):
        try:
            with warnings.catch_warnings(action="ignore"):
                ds[tag]
        except Exception as exc:
            raise input_error(path, f"element {tag} cannot be read ({type(exc).__name__}: its value or VR is "
                              "damaged)", "a valid DICOM element", f"remove {path.name} from the case folder, or "
                              "replace it with a good copy from the export", case=case_id) from None


def _read_without_preamble(path: Path) -> Dataset | None:
    """Old exports may lack the 128-byte preamble; accept them only if they look like DICOM."""
    try:
        with warnings.catch_warnings(action="ignore"):
            ds = pydicom.dcmread(path, force=True)
            sop_class = str(ds.get("SOPClassUID", ""))
            modality = ds.get("Modality")
    except Exception:
        return None
    if not _UID.match(sop_class) or not modality:
        return None
    return ds


def _short_element(ds: Dataset) -> tuple[str, int, int] | None:
    """A top-level element whose stored value is shorter than its declared length (truncated file)."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH and raw.value is not None:
            if len(raw.value) < raw.length:
                return str(tag), len(raw.value), raw.length
    return None


def orientation(ds: Dataset, path: Path, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal (row x column), unit vectors in LPS."""
    iop = floats(ds, "ImageOrientationPatient", 6, path, case_id)
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise input_error(path, f"ImageOrientationPatient = {[float(v) for v in iop]}", "two orthogonal unit vectors",
                          "re-export the file; its orientation is damaged", case=case_id)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def step_tolerance(step: float) -> float:
    """How far one slice step may differ from the usual step (mm)."""
    return max(STEP_TOL_MM, STEP_TOL_REL * abs(step))


def direction_of(row: np.ndarray, col: np.ndarray, normal: np.ndarray) -> tuple[float, ...]:
    """SimpleITK direction (row-major 3x3) whose columns are the x, y, z index directions."""
    return tuple(np.column_stack([row, col, normal]).ravel())


def rescale(ds: Dataset, path: Path, case_id: str) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (1 and 0 when absent). A slope of 0 (or below) is
    refused: it is no scale, and taking it as 1 would hide a damaged header."""
    slope = number(ds, "RescaleSlope", path, case_id, default=1.0, lo=-1e3, hi=1e3)
    if slope <= 0:
        raise input_error(path, f"RescaleSlope = {slope:g}", "a positive slope (1 for CT)",
                          "re-export the CT series; its rescale header is damaged", case=case_id)
    intercept = number(ds, "RescaleIntercept", path, case_id, default=0.0, lo=-1e5, hi=1e5)
    return slope, intercept


def _same(items: list[tuple[Path, Dataset]], keyword: str, case_id: str, atol: float | None = None) -> None:
    """Every slice must agree with the first on `keyword`."""
    first_path, first = items[0]
    ref = first.get(keyword)
    for path, ds in items[1:]:
        value = ds.get(keyword)
        if atol is None:
            same = str(value) == str(ref)
        else:
            try:
                same = value is not None and ref is not None and np.allclose(
                    np.asarray(value, float), np.asarray(ref, float), atol=atol)
            except (TypeError, ValueError):  # other counts of values, or not numbers
                same = False
        if not same:
            raise input_error(path, f"{keyword} {value} differs from {ref} in {first_path.name}",
                              f"one {keyword} for the whole CT series",
                              "export a single consistent series (remove slices of other series or "
                              "reconstructions from the folder)", case=case_id)


def ct_from_datasets(items: list[tuple[Path, Dataset]], case_id: str) -> tuple[np.ndarray, Geometry, dict]:
    """One CT series, its (path, dataset) items read by read_dataset: HU (z, y, x) int16, its
    Geometry and its UIDs (no patient data): study_uid, series_uid, frame_of_reference_uid and
    ct_sop_uids (z order)."""
    _check_series(items, case_id)
    path0, ds0 = items[0]
    row, col, normal = orientation(ds0, path0, case_id)
    spacing = spacing_yx(ds0, path0, case_id)  # [row spacing (y), column spacing (x)]
    for path, ds in items:
        tilt = number(ds, "GantryDetectorTilt", path, case_id, default=0.0)
        if abs(tilt) > 1e-3:
            raise input_error(path, f"GantryDetectorTilt {tilt:g} degrees", "an untilted CT (0 degrees)",
                              "reconstruct or resample the CT without gantry tilt before ingest", case=case_id)

    ipp = np.stack([floats(ds, "ImagePositionPatient", 3, p, case_id) for p, ds in items])  # (n, 3) mm
    along = ipp @ normal  # (n,) position along the slice normal, mm
    order = np.argsort(along, kind="stable")
    items = [items[i] for i in order]
    ipp, along = ipp[order], along[order]
    _check_no_drift(items, ipp, along, normal, case_id)
    step = _uniform_step(items, along, case_id)
    hu = _hu_volume(items, case_id)
    geometry = Geometry(shape=hu.shape, spacing=(step, float(spacing[0]), float(spacing[1])), origin=tuple(ipp[0]),
                        direction=direction_of(row, col, normal))
    uids = {
        "study_uid": str(ds0.get("StudyInstanceUID", "")),
        "series_uid": str(ds0.get("SeriesInstanceUID", "")),
        "frame_of_reference_uid": str(ds0.get("FrameOfReferenceUID", "")),
        "ct_sop_uids": [str(ds.get("SOPInstanceUID", "")) for _, ds in items],
    }
    log.debug(f"case {case_id}: CT series of {hu.shape[0]} slices, spacing {geometry.spacing} mm")
    return hu, geometry, uids


def _check_series(items: list[tuple[Path, Dataset]], case_id: str) -> None:
    """At least two single-frame CT slices of one series, one grid and one orientation."""
    if not items:
        raise input_error("CT series", "no CT files", "a CT series of at least 2 slices",
                          "add the CT series to the case folder", case=case_id)
    for path, ds in items:
        if ds.get("Modality") != "CT":
            raise input_error(path, f"Modality {ds.get('Modality')}", "CT", "pass only CT slices", case=case_id)
        if integer(ds, "NumberOfFrames", path, case_id, default=1, hi=1 << 20) > 1:
            raise input_error(path, "a multi-frame (enhanced) CT", "one slice per file",
                              "export the CT as classic single-frame images", case=case_id)
    if len(items) < 2:
        raise input_error(items[0][0], "a CT series of a single slice", "at least 2 slices (3D volume)",
                          "export the complete CT series", case=case_id)
    for keyword in ("SeriesInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
        _same(items, keyword, case_id)
    _same(items, "ImageOrientationPatient", case_id, atol=1e-4)
    _same(items, "PixelSpacing", case_id, atol=1e-4)


def _check_no_drift(items: list[tuple[Path, Dataset]], ipp: np.ndarray, along: np.ndarray, normal: np.ndarray,
                    case_id: str) -> None:
    """Sorted slices: no two at one position, and no in-plane drift of the slice corners along
    the stack (gantry tilt or a sheared grid)."""
    names = [p.name for p, _ in items]
    dup = np.flatnonzero(np.diff(along) < STEP_TOL_MM)
    if dup.size:
        i = int(dup[0])
        raise input_error(items[i + 1][0], f"same slice position ({along[i]:.3f} mm) as {names[i]}",
                          "one slice per position", f"remove the duplicate slice ({names[i + 1]} or {names[i]})",
                          case=case_id)
    rel = ipp - ipp[0]  # (n, 3) mm
    lateral = np.linalg.norm(rel - np.outer(along - along[0], normal), axis=1)  # (n,) mm
    allowed = np.maximum(STEP_TOL_MM, TILT_TOL * np.abs(along - along[0]))
    if np.any(lateral > allowed):
        i = int(np.argmax(lateral - allowed))
        angle = np.degrees(np.arctan2(lateral[i], abs(along[i] - along[0])))
        raise input_error(items[i][0], f"slice origins drift {lateral[i]:.2f} mm sideways over "
                          f"{abs(along[i] - along[0]):.1f} mm (gantry tilt of about {angle:.1f} degrees)",
                          "slice positions along the normal of ImageOrientationPatient (no gantry tilt)",
                          "reconstruct or resample the CT without gantry tilt before ingest", case=case_id)


def _uniform_step(items: list[tuple[Path, Dataset]], along: np.ndarray, case_id: str) -> float:
    """The slice step (mm) of sorted slices: no missing slice, steps uniform within tolerance."""
    names = [p.name for p, _ in items]
    diffs = np.diff(along)  # (n-1,) mm
    usual = float(np.median(diffs))
    gaps = np.flatnonzero(diffs > 1.5 * usual)
    if gaps.size:
        i = int(gaps[0])
        missing = max(1, int(round(diffs[i] / usual)) - 1)
        raise input_error(items[i + 1][0], f"gap of {diffs[i]:.3f} mm after {names[i]} (about {missing} "
                          f"missing slice(s); usual step {usual:.3f} mm)",
                          "a complete series with one slice every step",
                          "export the complete CT series again (all slices)", case=case_id)
    bad = np.flatnonzero(np.abs(diffs - usual) > step_tolerance(usual))
    if bad.size:
        i = int(bad[0])
        raise input_error(items[i + 1][0], f"slice step {diffs[i]:.3f} mm after {names[i]} while the usual "
                          f"step is {usual:.3f} mm (steps range {diffs.min():.3f}-{diffs.max():.3f} mm)",
                          f"uniform slice spacing (within {step_tolerance(usual):.3f} mm)",
                          "resample the CT to uniform slice spacing, or export a series with uniform spacing",
                          case=case_id)
    return float((along[-1] - along[0]) / (len(along) - 1))


def _hu_volume(items: list[tuple[Path, Dataset]], case_id: str) -> np.ndarray:
    """(z, y, x) int16 HU of sorted slices; values beyond int16 are clipped with a warning."""
    path0, ds0 = items[0]
    rows, cols = integer(ds0, "Rows", path0, case_id), integer(ds0, "Columns", path0, case_id)
    check_volume_size((len(items), rows, cols), path0, case_id)
    hu = np.empty((len(items), rows, cols), dtype=np.int16)  # (z, y, x) HU
    clipped = 0
    for k, (path, ds) in enumerate(items):
        raw = pixels(ds, path, case_id)
        if raw.shape != (rows, cols):
            raise input_error(path, f"pixel array of shape {raw.shape}", f"({rows}, {cols}) as Rows/Columns say",
                              "re-export the CT series", case=case_id)
        slope, intercept = rescale(ds, path, case_id)
        values = np.rint(raw.astype(np.float64) * slope + intercept)  # (y, x) HU
        over = (values < -32768) | (values > 32767)
        clipped += int(over.sum())
        hu[k] = np.clip(values, -32768, 32767)
    if clipped:
        warn(items[0][0].parent, f"{clipped} CT voxels outside the int16 range", "clipped to [-32768, 32767] HU",
             case=case_id)
    return hu

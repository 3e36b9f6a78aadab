"""Case <-> NIfTI folder (ingest output): ct.nii.gz, dose.nii.gz, roi/<ROI>.nii.gz, case.json."""

from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dosediff import __version__
from dosediff.atomic import atomic_dir
from dosediff.errors import input_error
from dosediff.names import is_safe_name
from dosediff.volume import Case, Geometry

POSSIBLE_DOSE = "possible_dose_mask"


def write_image(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write one (z, y, x) array on `geometry` as a compressed NIfTI file, then verify it:
    SimpleITK reports a short write (full disk) only on stderr and returns normally."""
    sitk.WriteImage(geometry.to_sitk(array), str(path), useCompression=True)
    try:
        _check_complete(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = tuple(reader.GetSize())[::-1]
    except (OSError, EOFError, zlib.error, RuntimeError) as exc:
        raise OSError(errno.EIO, f"NIfTI file incomplete right after writing ({type(exc).__name__}); disk full?",
                      str(path)) from None
    if size != tuple(np.shape(array)):
        raise OSError(errno.EIO, f"NIfTI file holds shape {size}, written {np.shape(array)}", str(path))


def _check_complete(path: Path) -> None:
    """Decompress the whole file: a truncated .nii.gz fails its gzip length and CRC check,
    where SimpleITK would read it back with missing slices."""
    with gzip.open(path, "rb") as fh:
        while fh.read(1 << 22):
            pass


def read_image(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI file as a (z, y, x) array and its geometry (a truncated file is an error)."""
    fix = "delete the case folder and run the ingest step for this case again"
    if not Path(path).is_file():
        raise input_error(path, "file not found", "a NIfTI image written by `dosediff ingest`", fix)
    try:
        if str(path).endswith(".gz"):
            _check_complete(Path(path))
        image = sitk.ReadImage(str(path))
    except (OSError, EOFError, zlib.error, RuntimeError) as exc:
        raise input_error(path, f"damaged or truncated NIfTI file ({type(exc).__name__})",
                          "a complete NIfTI image", fix) from None
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image)


def stored_case(case: Case) -> Case:
    """The Case as write_case stores it and read_case returns it: CT int16, dose float32,
    masks uint8, meta through JSON. Preprocessing this equals preprocessing the folder."""
    def as_type(array: np.ndarray | None, dtype: type) -> np.ndarray | None:
        return None if array is None else array.astype(dtype, copy=False)

    return dataclasses.replace(
        case, ct=as_type(case.ct, np.int16), dose=as_type(case.dose, np.float32),
        masks={name: as_type(mask, np.uint8) for name, mask in case.masks.items()},
        possible_dose=as_type(case.possible_dose, np.uint8), meta=json.loads(json.dumps(case.meta)))


def write_case(case: Case, out_dir: Path) -> Case:
    """Write a Case as the ingest folder; the folder appears only when complete. Returns the
    Case as read_case would read it back (stored_case)."""
    case = stored_case(case)
    with atomic_dir(out_dir) as tmp:
        geo = case.geometry
        write_image(case.ct, geo, tmp / "ct.nii.gz")
        if case.dose is not None:
            write_image(case.dose, geo, tmp / "dose.nii.gz")
        (tmp / "roi").mkdir()
        for name, mask in case.masks.items():
            if not is_safe_name(name):  # ROI names become file names
                raise input_error("setting dataset.rois", f"ROI name {name!r}", "a plain file name",
                                  "rename the ROI in dataset.rois (letters, digits, _ . -)", case=case.case_id)
            write_image(mask, geo, tmp / "roi" / f"{name}.nii.gz")
        if case.possible_dose is not None:
            write_image(case.possible_dose, geo, tmp / f"{POSSIBLE_DOSE}.nii.gz")
        info = {
            "case_id": case.case_id,
            "geometry": geo.to_dict(),
            "rois": list(case.masks),
            "has_dose": case.dose is not None,
            "has_possible_dose": case.possible_dose is not None,
            "prescription_gy": case.prescription_gy,
            "meta": case.meta,
            "dosediff_version": __version__,
        }
        (tmp / "case.json").write_text(json.dumps(info, indent=2))
    return case


def _read_info(info_path: Path) -> dict:
    """case.json, checked: a JSON mapping with the keys read_case uses and safe ROI names."""
    fix = "delete the case folder and run `dosediff ingest` for this case again"
    try:
        info = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise input_error(info_path, "not valid JSON (damaged)", "the case.json written by ingest", fix) from None
    missing = [k for k in ("case_id", "geometry", "rois", "has_dose") if not isinstance(info, dict) or k not in info]
    if missing:
        raise input_error(info_path, f"keys {missing} missing", "the case.json written by ingest", fix)
    if not isinstance(info["rois"], list) or not all(is_safe_name(n) for n in info["rois"]):
        raise input_error(info_path, "ROI list with unsafe names", "ROI names that are plain file names", fix)
    try:
        Geometry.from_dict(info["geometry"])
    except (KeyError, TypeError, ValueError):
        raise input_error(info_path, "damaged geometry", "shape, spacing, origin and direction", fix) from None
    return info


def read_case(case_dir: Path) -> Case:
    """Read an ingest folder back into a Case (exact arrays, geometry from case.json)."""
    case_dir = Path(case_dir)
    info_path = case_dir / "case.json"
    if not info_path.is_file():
        raise input_error(info_path, "file not found", "an ingest folder with case.json",
                          "run `dosediff ingest` (or the workflow's ingest rule) for this case")
    info = _read_info(info_path)
    geo = Geometry.from_dict(info["geometry"])
    ct, _ = read_image(case_dir / "ct.nii.gz")
    dose = read_image(case_dir / "dose.nii.gz")[0].astype(np.float32) if info["has_dose"] else None
    masks = {name: read_image(case_dir / "roi" / f"{name}.nii.gz")[0].astype(np.uint8) for name in info["rois"]}
    possible = None
    if info.get("has_possible_dose"):
        possible = read_image(case_dir / f"{POSSIBLE_DOSE}.nii.gz")[0].astype(np.uint8)
    return Case(case_id=info["case_id"], geometry=geo, ct=ct.astype(np.int16), dose=dose, masks=masks,
                possible_dose=possible, prescription_gy=info.get("prescription_gy"), meta=info.get("meta", {}))

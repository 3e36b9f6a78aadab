"""Case <-> NIfTI folder (ingest output): ct.nii.gz, dose.nii.gz, roi/<ROI>.nii.gz, case.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dosediff import __version__
from dosediff.atomic import atomic_dir
from dosediff.errors import input_error
from dosediff.volume import Case, Geometry

POSSIBLE_DOSE = "possible_dose_mask"


def write_image(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    """Write one (z, y, x) array on `geometry` as a compressed NIfTI file."""
    sitk.WriteImage(geometry.to_sitk(array), str(path), useCompression=True)


def read_image(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI file as a (z, y, x) array and its geometry."""
    if not Path(path).is_file():
        raise input_error(path, "file not found", "a NIfTI image written by `dosediff ingest`",
                          "run the ingest step for this case again")
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image)


def write_case(case: Case, out_dir: Path) -> None:
    """Write a Case as the ingest folder; the folder appears only when complete."""
    with atomic_dir(out_dir) as tmp:
        geo = case.geometry
        write_image(case.ct.astype(np.int16), geo, tmp / "ct.nii.gz")
        if case.dose is not None:
            write_image(case.dose.astype(np.float32), geo, tmp / "dose.nii.gz")
        (tmp / "roi").mkdir()
        for name, mask in case.masks.items():
            write_image(mask.astype(np.uint8), geo, tmp / "roi" / f"{name}.nii.gz")
        if case.possible_dose is not None:
            write_image(case.possible_dose.astype(np.uint8), geo, tmp / f"{POSSIBLE_DOSE}.nii.gz")
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


def read_case(case_dir: Path) -> Case:
    """Read an ingest folder back into a Case (exact arrays, geometry from case.json)."""
    case_dir = Path(case_dir)
    info_path = case_dir / "case.json"
    if not info_path.is_file():
        raise input_error(info_path, "file not found", "an ingest folder with case.json",
                          "run `dosediff ingest` (or the workflow's ingest rule) for this case")
    info = json.loads(info_path.read_text())
    geo = Geometry.from_dict(info["geometry"])
    ct, _ = read_image(case_dir / "ct.nii.gz")
    dose = read_image(case_dir / "dose.nii.gz")[0].astype(np.float32) if info["has_dose"] else None
    masks = {name: read_image(case_dir / "roi" / f"{name}.nii.gz")[0].astype(np.uint8) for name in info["rois"]}
    possible = None
    if info.get("has_possible_dose"):
        possible = read_image(case_dir / f"{POSSIBLE_DOSE}.nii.gz")[0].astype(np.uint8)
    return Case(
        case_id=info["case_id"], geometry=geo, ct=ct.astype(np.int16), dose=dose, masks=masks,
        possible_dose=possible, prescription_gy=info.get("prescription_gy"), meta=info.get("meta", {}),
    )

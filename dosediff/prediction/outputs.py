"""Stored-grid dose -> original CT grid, masked, written atomically as NIfTI (and RTDOSE).

Every file is first written (and verified) as a dosediff.atomic temporary; only when all of a
case's files exist are they renamed into place, the manifest last, so a failure leaves no
partial output and a present manifest means a complete prediction.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from dosediff.atomic import atomic_file
from dosediff.errors import input_error
from dosediff.io.nifti import write_image
from dosediff.io.rtdose_writer import write_rtdose
from dosediff.preprocess.body import body_mask
from dosediff.preprocess.resample import original_geometry, restore_to_original
from dosediff.volume import Case, Geometry

DICOM_REFS = ("study_uid", "frame_of_reference_uid", "ct_sop_uids")


def check_same_case(case: Case, attrs: dict, h5_path: Path, case_dir: Path) -> None:
    """The ingest folder and the HDF5 must describe the same CT grid."""
    stored = original_geometry(attrs)
    if not stored.same_grid(case.geometry):
        raise input_error(case_dir, f"CT grid {case.geometry.shape} at {case.geometry.origin}",
                          f"the original grid {stored.shape} at {stored.origin} recorded in {h5_path}",
                          "pass the ingest folder and the HDF5 file of the same case (re-run preprocessing "
                          "if the case was ingested again)", case=case.case_id)


def dose_region(case: Case, attrs: dict, body_stored: np.ndarray,
                possible_stored: np.ndarray | None) -> np.ndarray:
    """(Z, Y, X) bool on the original grid where dose may be nonzero: the body (recomputed from
    the CT with preprocessing's threshold, so it is exact on this grid) and the possible-dose
    mask where the dataset has one."""
    threshold = attrs.get("body_threshold_hu")
    if threshold is not None:
        region = body_mask(case.ct, float(threshold)) > 0
    else:  # an HDF5 without the threshold: bring its body back instead
        region = restore_to_original(body_stored, attrs, kind="mask") > 0
    if case.possible_dose is not None:
        region &= case.possible_dose > 0
    elif possible_stored is not None:
        region &= restore_to_original(possible_stored, attrs, kind="mask") > 0
    return region


def to_original(volume_zhw: np.ndarray, attrs: dict, region: np.ndarray, max_gy: float | None = None) -> np.ndarray:
    """Stored-grid (Z, H, W) Gy -> float32 original-grid Gy, 0 outside `region`, clipped to
    [0, max_gy]: restore_to_original inverts an upsample by least squares, which can
    overshoot where the prediction is rough; the network cannot express doses beyond its
    normalisation range (train.dose_max_gy) anyway."""
    out = restore_to_original(volume_zhw.astype(np.float32), attrs)  # (Zo, Yo, Xo) Gy
    out[~region] = 0.0
    return np.clip(out, 0.0, max_gy, out=out)


def dicom_refs(case: Case) -> dict | None:
    """The source CT's UIDs when the case came from DICOM (None otherwise)."""
    refs = {k: case.meta.get(k) for k in DICOM_REFS if case.meta.get(k)}
    return refs if refs.get("study_uid") and refs.get("frame_of_reference_uid") else None


def _extension(path: Path) -> str:
    """The temporary keeps the extension: SimpleITK picks its writer from it."""
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


def write_outputs(paths: dict[str, Path], geometry: Geometry, dose: np.ndarray, std: np.ndarray | None,
                  refs: dict | None, description: str, manifest: dict, started: float) -> dict[str, str]:
    """Write dose (and std, RTDOSE) and the manifest atomically; remove stale outputs of an
    earlier run that this one does not produce. Sets manifest["files"] and manifest["seconds"]
    (since `started`, a time.perf_counter value, up to the manifest) and returns the files,
    {role: file name}."""
    roles = ["dose"] + (["std"] if std is not None else []) + (["rtdose"] if refs is not None else [])
    files = {role: paths[role].name for role in roles}
    manifest["files"] = files
    with ExitStack() as renames:  # on leaving, renamed in reverse order of entry, or all removed on error
        manifest_tmp = renames.enter_context(atomic_file(paths["manifest"]))  # entered first: renamed last
        for role in roles:
            tmp = renames.enter_context(atomic_file(paths[role], suffix=_extension(paths[role])))
            if role == "rtdose":
                write_rtdose(dose, geometry, refs, tmp, description=description)
            else:
                write_image((dose if role == "dose" else std).astype(np.float32), geometry, tmp)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        manifest_tmp.write_text(json.dumps(manifest, indent=2))
        paths["manifest"].unlink(missing_ok=True)  # no manifest until every file is in place
        for role in ("std", "rtdose"):  # a previous run's extra files would contradict the manifest
            if role not in files:
                paths[role].unlink(missing_ok=True)
    return files

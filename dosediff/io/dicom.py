"""DICOM-RT case folder (CT series + RTSTRUCT + RTDOSE [+ RTPLAN]) -> Case on the CT grid.

The readers live in dicom_ct.py (CT series), rtstruct.py (contours, rasteriser) and
rtdose.py (dose, resampling); this module finds the files of one case and ties them together.

ROI names are matched to the dataset by dosediff.io.roi_names (as for OpenKBP): unknown
names are a warning, a missing ROI of dataset.required_rois an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dosediff.config import DatasetConfig
from dosediff.errors import InputError, input_error, warn
from dosediff.io.dicom_ct import ct_from_datasets, read_dataset
from dosediff.io.dicom_tags import number
from dosediff.io.rtdose import resample_to, rtdose_from_dataset
from dosediff.io.roi_names import check_required_rois, match_roi_names
from dosediff.io.rtstruct import (rasterize_roi, referenced_series_uids, rtstruct_frame_of_reference,
                                  rtstruct_from_dataset)
from dosediff.volume import Case, Geometry

log = logging.getLogger("dosediff")

MODALITIES = ("CT", "RTSTRUCT", "RTDOSE", "RTPLAN")
MIN_DOSE_OVERLAP = 0.5  # of the high-dose region on the CT grid
Item = tuple[Path, Dataset]


def read_dicom_case(folder: Path, case_id: str, dataset: DatasetConfig, strict_dose: bool = True) -> Case:
    """Read one patient's DICOM-RT folder (searched recursively) into a Case on the CT grid.

    Dose is resampled linearly onto the CT grid (None without an RTDOSE); ROI masks are keyed
    by the dataset's canonical names; meta holds only UIDs (no patient-identifying fields).
    An RTDOSE of another frame of reference is an error, or with strict_dose=False (the dose
    is optional: prediction only) a warning, and the dose is left out.
    """
    folder = Path(folder)
    files = scan_folder(folder, case_id)
    ct_items = select_ct_series(files.get("CT", []), files.get("RTSTRUCT", []), folder, case_id)
    ct_path, ct_ds = ct_items[0]
    ct_for = str(ct_ds.get("FrameOfReferenceUID", "") or "").strip()
    if not ct_for:  # else the RTSTRUCT and RTDOSE would be blamed, against an empty UID
        raise input_error(ct_path, "no FrameOfReferenceUID in the CT", "the UID that ties the CT to its "
                          "structures and dose", "re-export the CT series from the scanner or planning system",
                          case=case_id)
    ct_what = f"{ct_for}, the CT series' frame of reference ({len(ct_items)} slices, e.g. {ct_path.name})"
    rois, matched, where = _structures(files, ct_ds, ct_for, ct_what, folder, dataset, case_id)

    dose_item = select_rtdose(files.get("RTDOSE", []), files.get("RTPLAN", []), ct_for, folder, case_id)
    dose_src = _plan_dose(dose_item, ct_for, ct_what, strict_dose, case_id) if dose_item is not None else None

    hu, geometry, uids = ct_from_datasets(ct_items, case_id)
    masks = _masks(rois, matched, geometry, dataset, where, case_id)
    dose = None
    if dose_src is not None:
        check_dose_overlap(dose_src[0], dose_src[1], geometry, dose_item[0], case_id)
        dose = resample_to(dose_src[0], dose_src[1], geometry)  # (z, y, x) Gy on the CT grid
    _log_prescription(files.get("RTPLAN", []), dose_src[2] if dose_src else None, dataset, case_id)
    log.info(f"case {case_id}: CT {geometry.shape} at {tuple(round(s, 3) for s in geometry.spacing)} mm, "
             f"ROIs {list(masks)}, dose {'none' if dose is None else f'max {dose.max():.2f} Gy'}")
    return Case(case_id=case_id, geometry=geometry, ct=hu, dose=dose, masks=masks,
                prescription_gy=float(dataset.prescription_gy), meta={"source": "dicom", **uids})


def _structures(files: dict[str, list[Item]], ct_ds: Dataset, ct_for: str, ct_what: str, folder: Path,
                dataset: DatasetConfig, case_id: str) -> tuple[dict[str, list[np.ndarray]], dict[str, str], Path]:
    """The RTSTRUCT of the CT series: (contours by file ROI name, canonical -> file name, the
    file or the folder when there is none); required ROIs without contours are an error."""
    struct = select_rtstruct(files.get("RTSTRUCT", []), str(ct_ds.get("SeriesInstanceUID", "")), ct_for,
                             folder, case_id)
    rois: dict[str, list[np.ndarray]] = {}
    matched: dict[str, str] = {}
    if struct is not None:
        rois, struct_for = rtstruct_from_dataset(struct[1], struct[0], case_id)
        if struct_for != ct_for:
            raise input_error(struct[0], f"FrameOfReferenceUID {struct_for}", ct_what,
                              "export the RTSTRUCT drawn on this CT, or remove the file from the folder",
                              case=case_id)
        matched = match_roi_names(list(rois), dataset, struct[0], case_id)
    elif dataset.required_rois:
        raise input_error(folder, "no RTSTRUCT file", f"a structure set with {dataset.required_rois}",
                          "export the structure set with the CT", case=case_id)
    else:
        warn(folder, "no RTSTRUCT file", "the case has no ROI masks", case=case_id)
    where = struct[0] if struct is not None else folder
    present = [canon for canon, name in matched.items() if rois[name]]
    check_required_rois(dataset, present, list(rois), matched, where, case_id)
    return rois, matched, where


def _masks(rois: dict[str, list[np.ndarray]], matched: dict[str, str], geometry: Geometry,
           dataset: DatasetConfig, where: Path, case_id: str) -> dict[str, np.ndarray]:
    """Rasterised masks in dataset.rois order; ROIs without contours on the grid are left out
    (a warning, an error when required)."""
    masks: dict[str, np.ndarray] = {}
    empty = [canon for canon, name in matched.items() if not rois[name]]
    for canon in dataset.rois:
        if canon not in matched or canon in empty:
            continue
        mask = rasterize_roi(rois[matched[canon]], geometry)  # (z, y, x) uint8
        if mask.any():
            masks[canon] = mask
        else:
            empty.append(canon)
    if empty:
        names = {c: matched[c] for c in empty}
        warn(where, f"ROIs {names} have no contours on the CT grid", "left out of the case", case=case_id)
        check_required_rois(dataset, list(masks), list(rois), matched, where, case_id)
    return masks


def check_dose_overlap(dose: np.ndarray, src: Geometry, ct: Geometry, path: Path, case_id: str) -> float:
    """Fraction of the dose grid's high-dose voxels (>= 10 % of the maximum) whose centres lie on
    the CT grid: refused below MIN_DOSE_OVERLAP (the training dose would be mostly zero),
    warned below 1 (the dose is cut at the CT's edge)."""
    top = float(dose.max()) if dose.size else 0.0
    if top <= 0:
        warn(path, "the dose is 0 Gy everywhere", "used as is; check that this is the plan's dose", case=case_id)
        return 1.0
    idx = np.argwhere(dose >= 0.1 * top)  # (n, 3) z, y, x
    idx = idx[:: max(1, len(idx) // 200_000)]  # a sample is enough for a fraction
    on_ct = ct.world_to_index(src.index_to_world(idx))  # (n, 3) CT indices
    inside = np.all((on_ct >= -0.5) & (on_ct <= np.asarray(ct.shape) - 0.5), axis=1)
    fraction = float(inside.mean())
    if fraction < MIN_DOSE_OVERLAP:
        raise input_error(path, f"only {fraction:.1%} of the high-dose region lies on the CT grid",
                          f"at least {MIN_DOSE_OVERLAP:.0%} (the dose computed on this CT)",
                          "export the RTDOSE computed on this CT (check ImagePositionPatient)", case=case_id)
    if fraction < 0.999:
        warn(path, f"{1 - fraction:.1%} of the high-dose region lies outside the CT grid",
             "cut at the CT's edge", case=case_id)
    return fraction


def scan_folder(folder: Path, case_id: str) -> dict[str, list[Item]]:
    """Every file under `folder` read as DICOM and grouped by modality (others ignored with a warning)."""
    if not folder.is_dir():
        raise input_error(folder, "folder not found", "a folder of the patient's DICOM-RT files",
                          "check dataset.input_dir and the case name", case=case_id)
    hidden, files = [], []
    try:
        found = sorted(folder.rglob("*"))
    except (RecursionError, OSError) as exc:
        raise input_error(folder, f"sub-folders nested too deep or looping ({type(exc).__name__})",
                          "a patient folder with a few levels of sub-folders", "flatten the export",
                          case=case_id) from None
    for path in found:
        if path.is_file():
            rel = path.relative_to(folder)
            (hidden if any(part.startswith(".") for part in rel.parts) else files).append(path)
    if hidden:
        warn(folder, f"hidden files {[str(p.relative_to(folder)) for p in hidden[:5]]}"
             f"{' and more' if len(hidden) > 5 else ''}", "ignored", case=case_id)
    if not files:
        raise input_error(folder, "empty folder (no DICOM files)", "a CT series and an RTSTRUCT (RTDOSE for "
                          "training)", "export the patient's DICOM-RT files into the folder, or remove it "
                          "(or list the case in dataset.exclude_cases)", case=case_id)
    groups: dict[str, list[Item]] = {}
    other, damaged = [], None
    for path in files:
        try:
            ds = read_dataset(path, case_id)
        except InputError as err:  # read the others first: their headers say which IDs to hide
            damaged = damaged or err
            continue
        modality = str(ds.get("Modality", "") or "").strip().upper()
        if modality in MODALITIES:
            groups.setdefault(modality, []).append((path, ds))
        else:
            other.append(f"{path.relative_to(folder)} ({modality or 'no Modality'})")
    if damaged is not None:
        raise damaged
    if other:
        warn(folder, f"{len(other)} files of other modalities: {other[:5]}{' ...' if len(other) > 5 else ''}",
             "ignored", case=case_id)
    return groups


def select_ct_series(cts: list[Item], structs: list[Item], folder: Path, case_id: str) -> list[Item]:
    """The CT series of the case: the only one, else the one the RTSTRUCT references."""
    series: dict[str, list[Item]] = {}
    for item in cts:
        series.setdefault(str(item[1].get("SeriesInstanceUID", "")), []).append(item)
    if not series:
        raise input_error(folder, "no CT series", "the planning CT's images", "export the CT series with "
                          "the RTSTRUCT and RTDOSE into the folder", case=case_id)
    if len(series) == 1:
        return next(iter(series.values()))
    referenced = set().union(*(referenced_series_uids(ds) for _, ds in structs)) if structs else set()
    hits = [uid for uid in series if uid in referenced]
    if not hits:
        struct_fors = {rtstruct_frame_of_reference(ds, p, case_id) for p, ds in structs}
        hits = [uid for uid, items in series.items() if str(items[0][1].get("FrameOfReferenceUID")) in struct_fors]
    if len(hits) == 1:
        others = sum(len(items) for uid, items in series.items() if uid != hits[0])
        warn(folder, f"{len(series) - 1} other CT series ({others} slices, e.g. slices whose SeriesInstanceUID "
             "is damaged)", "ignored: the RTSTRUCT is drawn on the chosen series", case=case_id)
        return series[hits[0]]
    listing = "; ".join(f"series {uid} ({len(items)} slices, e.g. {items[0][0].name})"
                        for uid, items in series.items())
    raise input_error(folder, f"{len(series)} CT series that the RTSTRUCT does not tell apart: {listing}",
                      "one CT series per case (or a single one that the RTSTRUCT references)",
                      "remove the extra CT series from the folder, keeping the planning CT", case=case_id)


def select_rtstruct(structs: list[Item], ct_series: str, ct_for: str, folder: Path, case_id: str) -> Item | None:
    """The structure set drawn on the CT: the only one, else the one referencing the CT series."""
    if len(structs) <= 1:
        return structs[0] if structs else None
    hits = [item for item in structs if ct_series in referenced_series_uids(item[1])]
    if not hits:
        hits = [item for item in structs if rtstruct_frame_of_reference(item[1], item[0], case_id) == ct_for]
    if len(hits) == 1:
        return hits[0]
    names = [p.name for p, _ in (hits or structs)]
    raise input_error(folder, f"{len(names)} RTSTRUCT files for one CT series: {names}", "one structure set per case",
                      "remove the extra RTSTRUCT files, keeping the one to use", case=case_id)


def select_rtdose(doses: list[Item], plans: list[Item], ct_for: str, folder: Path, case_id: str) -> Item | None:
    """The plan dose: the only RTDOSE, else by frame of reference, referenced plan and PLAN summation."""
    if len(doses) <= 1:
        return doses[0] if doses else None
    hits = [item for item in doses if str(item[1].get("FrameOfReferenceUID", "")) == ct_for] or doses
    if len(hits) > 1 and len(plans) == 1:
        plan_uid = str(plans[0][1].get("SOPInstanceUID", ""))
        hits = [item for item in hits if plan_uid in _plan_refs(item[1])] or hits
    if len(hits) > 1:
        hits = [item for item in hits if _summation(item[1]) == "PLAN"] or hits
    if len(hits) == 1:
        return hits[0]
    listing = [f"{p.name} (DoseSummationType {_summation(ds) or 'missing'})" for p, ds in hits]
    raise input_error(folder, f"{len(hits)} RTDOSE files could be the plan dose: {listing}",
                      "one plan dose per case (beam or fraction doses are not summed)",
                      "remove the extra RTDOSE files, keeping the whole plan's dose", case=case_id)


def _plan_dose(item: Item, ct_for: str, ct_what: str, strict: bool, case_id: str) -> tuple | None:
    """The RTDOSE's grid (rtdose_from_dataset) when it shares the CT's frame of reference; else
    an error, or without `strict` a warning and None."""
    dose_for = str(item[1].get("FrameOfReferenceUID", ""))
    if dose_for == ct_for:
        return rtdose_from_dataset(item[1], item[0], case_id)
    if strict:
        raise input_error(item[0], f"FrameOfReferenceUID {dose_for}", ct_what,
                          "export the RTDOSE computed on this CT, or remove the file from the folder", case=case_id)
    warn(item[0], f"FrameOfReferenceUID {dose_for} differs from the CT's {ct_for}",
         "the RTDOSE is ignored (not on this CT); predicting without the plan's dose", case=case_id)
    return None


def _summation(ds: Dataset) -> str:
    return str(ds.get("DoseSummationType", "") or "").strip().upper()


def _plan_refs(ds: Dataset) -> set[str]:
    return {str(item.get("ReferencedSOPInstanceUID", "")) for item in ds.get("ReferencedRTPlanSequence", [])}


def _log_prescription(plans: list[Item], dose_refs: dict | None, dataset: DatasetConfig, case_id: str) -> None:
    """Log the RTPLAN's target prescription beside the configured one (the configured one is used)."""
    plan_uid = dose_refs.get("referenced_plan_uid") if dose_refs else None
    chosen = [item for item in plans if str(item[1].get("SOPInstanceUID", "")) == plan_uid] or \
        (plans if len(plans) == 1 else [])
    if not chosen:
        return
    path, ds = chosen[0]
    try:  # informational only: a damaged value must not stop the case
        doses = [number(ref, "TargetPrescriptionDose", path, case_id) for ref in ds.get("DoseReferenceSequence", [])]
    except InputError as err:
        warn(path, f"unreadable TargetPrescriptionDose ({err})", "not reported", case=case_id)
        return
    doses = [d for d in doses if d is not None]
    if doses:
        # Not the file name: planning systems put the patient ID in it (RP.<PatientID>.Plan1.dcm).
        log.info(f"case {case_id}: the RTPLAN prescribes up to {max(doses):g} Gy; "
                 f"using dataset.prescription_gy = {dataset.prescription_gy:g} Gy")

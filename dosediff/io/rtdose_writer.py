"""Predicted dose -> DICOM RTDOSE on the source CT's frame of reference.

The file references the source CT's study and FrameOfReferenceUID so a planning system or
dicompyler places it on the original CT. Patient-identifying fields are left empty (type 2
attributes): no name, ID or birth date from the source headers is ever written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dosediff import __version__
from dosediff.atomic import atomic_file
from dosediff.errors import input_error
from dosediff.volume import Geometry

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UINT32_MAX = 2**32 - 1


def _ds(value: float) -> str:
    """DICOM decimal string (at most 16 characters)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6e}"


def write_rtdose(dose_gy: np.ndarray, geometry: Geometry, refs: dict, path: Path,
                 description: str = "dosediff predicted dose") -> None:
    """Write `dose_gy` (z, y, x, Gy) on `geometry` as an RTDOSE file.

    `refs` holds the source CT's UIDs (Case.meta from a DICOM ingest): study_uid,
    frame_of_reference_uid and, if known, ct_sop_uids.
    """
    missing = [k for k in ("study_uid", "frame_of_reference_uid") if not refs.get(k)]
    if missing:
        raise input_error("RTDOSE export", f"the case carries no {', '.join(missing)}",
                          "a case ingested from DICOM (its case.json meta holds the CT's UIDs)",
                          "export NIfTI only for cases that did not come from DICOM")
    if tuple(dose_gy.shape) != geometry.shape:
        raise ValueError(f"dose shape {dose_gy.shape} does not match the CT grid {geometry.shape}")
    dose = np.clip(np.nan_to_num(dose_gy.astype(np.float64)), 0.0, None)
    # Scale so the maximum uses most of the uint32 range; readers multiply by the scaling.
    # Pixels are computed with the scaling as the file spells it (10 digits), so a reader's
    # pixel x scaling is within half a step of the dose; still below UINT32_MAX after rounding.
    scaling = float(_ds(max(float(dose.max()), 1e-6) / (UINT32_MAX - 1)))
    pixels = np.rint(dose / scaling).astype(np.uint32)  # (z, y, x)

    ds = _header(refs, description)
    dose_grid(ds, geometry)
    ds.DoseComment = description[:64]
    ds.DoseGridScaling = _ds(scaling)
    if refs.get("ct_sop_uids"):
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        ref.ReferencedSOPInstanceUID = refs["ct_sop_uids"][0]
        ds.ReferencedImageSequence = Sequence([ref])
    ds.PixelData = pixels.tobytes()

    with atomic_file(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def new_dataset(sop_class: str, sop_uid: str) -> Dataset:
    """An empty instance of `sop_class` with its file meta (explicit VR little endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    return ds


def _header(refs: dict, description: str) -> Dataset:
    """File meta, patient (left empty), study and series of a new RTDOSE on the CT's study
    and frame of reference."""
    now = dt.datetime.now()
    ds = new_dataset(RT_DOSE_STORAGE, generate_uid())
    ds.Modality = "RTDOSE"
    ds.PatientName = ds.PatientID = ds.PatientBirthDate = ds.PatientSex = ""  # never the source's
    ds.StudyInstanceUID = refs["study_uid"]
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = refs["frame_of_reference_uid"]
    ds.PositionReferenceIndicator = ""
    ds.StudyDate = ds.StudyTime = ds.ReferringPhysicianName = ds.StudyID = ds.AccessionNumber = ""
    ds.SeriesNumber = 900
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.Manufacturer = "dosediff"
    ds.SoftwareVersions = __version__
    ds.SeriesDescription = description[:64]
    return ds


def dose_grid(ds: Dataset, geometry: Geometry, decimal: Callable[[float], str] = _ds) -> None:
    """The multi-frame image and grid attributes of a uint32 physical plan dose in Gy on
    `geometry`, numbers written as `decimal` spells them."""
    matrix = geometry.matrix  # columns: physical directions of index x, y, z
    dz = geometry.spacing[0]
    normal = np.cross(matrix[:, 0], matrix[:, 1])
    # Offsets along the row x column normal: negative when the z axis runs against it.
    offsets = np.arange(geometry.shape[0]) * dz * float(np.sign(normal @ matrix[:, 2]))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = geometry.shape[0]
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)
    ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[2]
    ds.PixelSpacing = [decimal(geometry.spacing[1]), decimal(geometry.spacing[2])]  # [row, column]
    ds.SliceThickness = decimal(dz)
    ds.ImagePositionPatient = [decimal(v) for v in geometry.origin]
    ds.ImageOrientationPatient = [decimal(v) for v in (*matrix[:, 0], *matrix[:, 1])]
    ds.GridFrameOffsetVector = [decimal(v) for v in offsets]
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"

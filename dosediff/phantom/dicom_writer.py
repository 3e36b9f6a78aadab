"""Write a PhantomPatient as real DICOM-RT files: CT series, RTSTRUCT, RTDOSE, RTPLAN.

Layout: out_dir/CT/CT.<n>.dcm, out_dir/RS.dcm, out_dir/RD.dcm, out_dir/RP.dcm. Explicit VR
little endian, UIDs derived from (seed, index) so the bytes are the same on every run.
The RTDOSE grid is a box around the body aligned with the CT voxels (other origin, other
size), so a reader must place it by its ImagePositionPatient; resampled onto the CT grid
it gives back the phantom's dose exactly (the dose is 0 outside the body).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dosediff.atomic import atomic_dir
from dosediff.io.rtdose_writer import dose_grid, new_dataset
from dosediff.phantom.patient import (
    ACCESSION, BIRTH_DATE, BODY_ROI_NAME, INSTITUTION, OPERATOR, PATIENT_NAME, PHYSICIAN, ROI_NAMES,
    STATION, STUDY_DATE, TARGETS, PhantomPatient,
)
from dosediff.volume import Geometry

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RTDOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RTPLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # conventional class for RTReferencedStudySequence
HU_INTERCEPT = -1024
DOSE_BOX_MARGIN = 2  # voxels around the body's in-plane bounding box
N_FRACTIONS = 30
COLOURS = {"PTV": [255, 0, 0], "SpinalCord": [255, 255, 0], "Esophagus": [255, 128, 0], "Heart": [255, 0, 255],
           "LungL": [0, 128, 255], "LungR": [0, 255, 255], BODY_ROI_NAME: [0, 255, 0]}


def _ds(value: float, decimals: int = 4) -> str:
    """Decimal string (DICOM DS, at most 16 characters) without trailing zeros."""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class _Uids:
    """Deterministic UIDs for one patient."""

    def __init__(self, patient: PhantomPatient) -> None:
        self._key = ["dosediff-phantom", str(patient.seed), str(patient.index)]
        self.study = self("study")
        self.frame = self("frame-of-reference")
        self.ct_series, self.rs_series = self("ct-series"), self("rtstruct-series")
        self.rd_series, self.rp_series = self("rtdose-series"), self("rtplan-series")
        self.ct = [self("ct", str(k)) for k in range(patient.geometry.shape[0])]
        self.rs, self.rd, self.rp = self("rtstruct"), self("rtdose"), self("rtplan")

    def __call__(self, *parts: str) -> str:
        return str(generate_uid(entropy_srcs=self._key + list(parts)))


def _base(patient: PhantomPatient, uids: _Uids, modality: str, sop_class: str, sop_uid: str,
          series_uid: str, series_number: int, description: str) -> Dataset:
    """Dataset with file meta, patient (sentinels), study, series and equipment modules."""
    ds = new_dataset(sop_class, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = modality
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ACCESSION
    ds.Manufacturer = "dosediff synthetic phantom"
    ds.InstitutionName = INSTITUTION
    ds.StationName = STATION
    ds.ReferringPhysicianName = PHYSICIAN
    ds.OperatorsName = OPERATOR
    ds.StudyDescription = "Synthetic thorax"
    ds.SeriesDescription = description
    ds.PatientName = PATIENT_NAME
    ds.PatientID = patient.patient_id()
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "O"
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.SoftwareVersions = "dosediff"
    return ds


def _ct_slice(patient: PhantomPatient, uids: _Uids, k: int) -> Dataset:
    g = patient.geometry
    nz, ny, nx = g.shape
    dz, dy, dx = g.spacing
    x0, y0, z0 = g.origin
    ds = _base(patient, uids, "CT", CT_STORAGE, uids.ct[k], uids.ct_series, 1, "CT thorax")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = uids.frame
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.KVP = "120"
    ds.InstanceNumber = k + 1
    z = z0 + k * dz
    ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = _ds(z)
    ds.SliceThickness = _ds(dz)
    ds.PixelSpacing = [_ds(dy), _ds(dx)]  # row spacing, column spacing
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0  # unsigned: stored = HU - intercept
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(HU_INTERCEPT), "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    stored = (patient.ct[k].astype(np.int32) - HU_INTERCEPT).astype("<u2")  # (y, x)
    ds.PixelData = stored.tobytes()
    return ds


def _image_ref(uids: _Uids, k: int) -> Dataset:
    """Reference to CT slice k."""
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT_STORAGE, uids.ct[k]
    return item


def _contour(poly: np.ndarray, uids: _Uids, z0: float, dz: float) -> Dataset:
    """One closed planar contour ((n, 3) x, y, z mm) on the CT slice it lies on."""
    c = Dataset()
    c.ContourImageSequence = [_image_ref(uids, int(round((poly[0, 2] - z0) / dz)))]
    c.ContourGeometricType = "CLOSED_PLANAR"
    c.NumberOfContourPoints = len(poly)
    c.ContourData = [_ds(v, 2) for v in poly.ravel()]  # x, y, z triplets, mm
    return c


def _rtstruct(patient: PhantomPatient, uids: _Uids) -> Dataset:
    g = patient.geometry
    z0, dz = g.origin[2], g.spacing[0]
    ds = _base(patient, uids, "RTSTRUCT", RTSTRUCT_STORAGE, uids.rs, uids.rs_series, 2, "Structures")
    ds.StructureSetLabel = "Phantom"
    ds.StructureSetName = "Phantom structures"
    ds.StructureSetDate, ds.StructureSetTime = STUDY_DATE, "120000"
    ds.InstanceNumber = 1

    series = Dataset()
    series.SeriesInstanceUID = uids.ct_series
    series.ContourImageSequence = [_image_ref(uids, k) for k in range(g.shape[0])]
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = STUDY_COMPONENT_MANAGEMENT, uids.study
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = uids.frame
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]

    rois = [(name, patient.roi_names[name], patient.contours[name],
             "PTV" if name in TARGETS else "ORGAN") for name in ROI_NAMES if patient.contours.get(name)]
    rois.append((BODY_ROI_NAME, BODY_ROI_NAME, patient.body_contours, "EXTERNAL"))
    structure_set, roi_contours, observations = [], [], []
    for number, (canonical, written, polygons, kind) in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber, item.ReferencedFrameOfReferenceUID = number, uids.frame
        item.ROIName, item.ROIGenerationAlgorithm = written, "MANUAL"
        structure_set.append(item)
        rc = Dataset()
        rc.ROIDisplayColor = COLOURS[canonical]
        rc.ReferencedROINumber = number
        rc.ContourSequence = [_contour(poly, uids, z0, dz) for poly in polygons]
        roi_contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = number, number
        obs.RTROIInterpretedType, obs.ROIInterpreter = kind, ""
        observations.append(obs)
    ds.StructureSetROISequence = structure_set
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    return ds


def dose_box(patient: PhantomPatient) -> tuple[slice, slice]:
    """In-plane (rows, columns) of the CT grid the RTDOSE covers: the body's box plus a margin."""
    _, ny, nx = patient.geometry.shape
    rows = np.nonzero(patient.body.any(axis=(0, 2)))[0]
    cols = np.nonzero(patient.body.any(axis=(0, 1)))[0]
    m = DOSE_BOX_MARGIN
    return (slice(max(rows[0] - m, 0), min(rows[-1] + m + 1, ny)),
            slice(max(cols[0] - m, 0), min(cols[-1] + m + 1, nx)))


def dose_scaling(max_gy: float) -> float:
    """DoseGridScaling with a short decimal form that keeps the largest value below 2**32."""
    return float(f"{max(max_gy, 1e-6) / 4.0e9:.4e}")


def _rtdose(patient: PhantomPatient, uids: _Uids) -> Dataset:
    g = patient.geometry
    rows, cols = dose_box(patient)
    dose = patient.dose[:, rows, cols]  # (z, y, x) Gy on the dose grid
    ds = _base(patient, uids, "RTDOSE", RTDOSE_STORAGE, uids.rd, uids.rd_series, 3, "Dose")
    ds.FrameOfReferenceUID = uids.frame
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    origin = g.index_to_world(np.array([0.0, rows.start, cols.start]))  # (x, y, z) mm
    dose_grid(ds, Geometry(dose.shape, g.spacing, tuple(origin), g.direction), _ds)
    scaling = dose_scaling(float(dose.max()))
    ds.DoseGridScaling = f"{scaling:.4e}"  # the same digits dose_scaling rounded to
    plan = Dataset()
    plan.ReferencedSOPClassUID, plan.ReferencedSOPInstanceUID = RTPLAN_STORAGE, uids.rp
    ds.ReferencedRTPlanSequence = [plan]
    stored = np.round(dose.astype(np.float64) / scaling).astype("<u4")  # (z, y, x)
    ds.PixelData = stored.tobytes()
    return ds


def _rtplan(patient: PhantomPatient, uids: _Uids) -> Dataset:
    ds = _base(patient, uids, "RTPLAN", RTPLAN_STORAGE, uids.rp, uids.rp_series, 4, "Plan")
    ds.FrameOfReferenceUID = uids.frame
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.RTPlanLabel, ds.RTPlanName = "Phantom IMRT", "Phantom IMRT"
    ds.RTPlanDate, ds.RTPlanTime = STUDY_DATE, "120000"
    ds.RTPlanGeometry = "PATIENT"
    ss = Dataset()
    ss.ReferencedSOPClassUID, ss.ReferencedSOPInstanceUID = RTSTRUCT_STORAGE, uids.rs
    ds.ReferencedStructureSetSequence = [ss]
    ref = Dataset()
    ref.DoseReferenceNumber, ref.DoseReferenceUID = 1, uids("dose-reference")
    ref.DoseReferenceStructureType, ref.DoseReferenceDescription = "SITE", "PTV"
    ref.DoseReferenceType = "TARGET"
    ref.TargetPrescriptionDose = _ds(patient.prescription_gy)
    ds.DoseReferenceSequence = [ref]
    setup = Dataset()
    setup.PatientSetupNumber, setup.PatientPosition = 1, "HFS"
    ds.PatientSetupSequence = [setup]
    iso = [_ds(v, 2) for v in patient.isocenter_mm]
    beams, refs = [], []
    for number, angle in enumerate(patient.gantry_deg, start=1):
        beams.append(_beam(number, angle, iso))
        rb = Dataset()
        rb.ReferencedBeamNumber = number
        refs.append(rb)
    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = N_FRACTIONS
    group.NumberOfBeams = len(beams)
    group.NumberOfBrachyApplicationSetups = 0
    group.ReferencedBeamSequence = refs
    ds.FractionGroupSequence = [group]
    ds.BeamSequence = beams
    return ds


def _beam(number: int, angle: float, iso: list[str]) -> Dataset:
    """One static 6 MV photon beam at gantry `angle`: two control points, the first holding
    the geometry."""
    beam = Dataset()
    beam.BeamNumber, beam.BeamName = number, f"G{angle:g}"
    beam.BeamType, beam.RadiationType = "STATIC", "PHOTON"
    beam.TreatmentMachineName = "PHANTOM-LINAC"
    beam.PrimaryDosimeterUnit = "MU"
    beam.SourceAxisDistance = "1000"
    beam.TreatmentDeliveryType = "TREATMENT"
    beam.NumberOfWedges = beam.NumberOfCompensators = beam.NumberOfBoli = beam.NumberOfBlocks = 0
    beam.ReferencedPatientSetupNumber = 1
    beam.FinalCumulativeMetersetWeight = "1"
    beam.NumberOfControlPoints = 2
    points = []
    for index in (0, 1):
        cp = Dataset()
        cp.ControlPointIndex = index
        cp.CumulativeMetersetWeight = str(index)
        if index == 0:
            cp.NominalBeamEnergy = "6"
            cp.GantryAngle = _ds(angle, 2)
            cp.GantryRotationDirection = "NONE"
            cp.BeamLimitingDeviceAngle = "0"
            cp.PatientSupportAngle = "0"
            cp.IsocenterPosition = iso
        points.append(cp)
    beam.ControlPointSequence = points
    return beam


@contextmanager
def _trusted_values() -> Iterator[None]:
    """Skip pydicom's per-value checks (our values are formatted to their VRs here); they
    cost over a second for the tens of thousands of contour coordinates."""
    settings = pydicom_config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def write_phantom_dicom(patient: PhantomPatient, out_dir: Path) -> None:
    """Write the patient's CT series, RTSTRUCT, RTDOSE and RTPLAN under `out_dir`.

    Written into a temporary sibling folder that replaces `out_dir` only once complete,
    so a failure leaves no half-written case behind.
    """
    with atomic_dir(Path(out_dir)) as tmp, _trusted_values():
        (tmp / "CT").mkdir()
        uids = _Uids(patient)
        for k in range(patient.geometry.shape[0]):
            _ct_slice(patient, uids, k).save_as(tmp / "CT" / f"CT.{k + 1}.dcm", enforce_file_format=True)
        _rtstruct(patient, uids).save_as(tmp / "RS.dcm", enforce_file_format=True)
        _rtdose(patient, uids).save_as(tmp / "RD.dcm", enforce_file_format=True)
        _rtplan(patient, uids).save_as(tmp / "RP.dcm", enforce_file_format=True)

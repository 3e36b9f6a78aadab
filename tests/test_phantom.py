"""Synthetic DICOM-RT phantom: determinism, DICOM validity, contours, dose physics, sentinels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath
from pydicom import config as pydicom_config

from dosediff.config import PhantomConfig
from dosediff.errors import InputError
from dosediff.phantom import (BODY_ROI_NAME, PHANTOM_ALIASES, ROI_NAMES, SENTINELS, make_phantom,
                              write_phantom_case, write_phantom_dicom)
from dosediff.phantom import dicom_writer
from dosediff.phantom.dose import MU_PER_MM, SAD_MM, beam_dose, relative_density
from dosediff.volume import Geometry

RX = 60.0


@pytest.fixture(scope="module")
def cfg() -> PhantomConfig:
    return PhantomConfig()


@pytest.fixture(scope="module")
def patient(cfg):
    return make_phantom(1, cfg)


@pytest.fixture(scope="module")
def case_dir(patient, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "phantom_001"
    write_phantom_dicom(patient, out)
    return out


def _ct_files(case_dir: Path) -> list[Path]:
    return sorted((case_dir / "CT").glob("CT.*.dcm"), key=lambda p: int(p.name.split(".")[1]))


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_arrays_and_bytes(patient, case_dir, cfg, tmp_path):
    again = make_phantom(1, cfg)
    assert np.array_equal(again.ct, patient.ct) and np.array_equal(again.dose, patient.dose)
    for name in ROI_NAMES:
        assert np.array_equal(again.masks[name], patient.masks[name])
        assert all(np.array_equal(a, b) for a, b in zip(again.contours[name], patient.contours[name], strict=True))
    write_phantom_case(tmp_path / "phantom_001", "phantom_001", 1, cfg)
    first = sorted(p.relative_to(case_dir) for p in case_dir.rglob("*") if p.is_file())
    second = sorted(p.relative_to(tmp_path / "phantom_001") for p in (tmp_path / "phantom_001").rglob("*")
                    if p.is_file())
    assert first == second and len(first) == patient.geometry.shape[0] + 3
    for rel in first:
        assert (case_dir / rel).read_bytes() == (tmp_path / "phantom_001" / rel).read_bytes(), rel


def test_other_index_or_seed_gives_other_anatomy(patient, cfg):
    others = [make_phantom(2, cfg), make_phantom(1, PhantomConfig(seed=7))]
    for other in others:
        assert not np.array_equal(other.ct, patient.ct)
        ptv_dice = _dice(other.masks["PTV"], patient.masks["PTV"])
        assert ptv_dice < 0.9
    # Sizes and positions vary between patients, not only the noise.
    body_voxels = [p.body.sum() for p in [patient, *others]]
    heart_centres = [np.argwhere(p.masks["Heart"]).mean(axis=0) for p in [patient, *others]]
    assert len(set(body_voxels)) == 3
    assert max(np.abs(h - heart_centres[0]).max() for h in heart_centres[1:]) > 1.0  # voxels


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


# ---------------------------------------------------------------- anatomy


def test_anatomy_is_plausible(patient):
    ct, g = patient.ct, patient.geometry
    body = patient.body.astype(bool)
    assert ct.dtype == np.int16 and patient.dose.dtype == np.float32
    assert abs(np.median(ct[~body]) + 1000) < 10  # air
    for name in ("LungL", "LungR"):
        assert -880 < np.median(ct[patient.masks[name].astype(bool)]) < -720
    assert -60 < np.median(ct[patient.masks["Heart"].astype(bool)]) < 100
    assert (ct[body] > 500).sum() > 200  # vertebrae and ribs
    for name in ROI_NAMES:
        m = patient.masks[name].astype(bool)
        assert m.sum() > 50, name
        assert not (m & ~body).any(), f"{name} leaves the body"
    centre = {n: g.index_to_world(np.argwhere(patient.masks[n]).mean(axis=0)) for n in ROI_NAMES}  # (x, y, z) mm
    assert centre["LungL"][0] > 20 > -20 > centre["LungR"][0]  # LPS: +x is the patient's left
    assert centre["Heart"][1] < centre["Esophagus"][1] < centre["SpinalCord"][1]  # anterior -> posterior
    assert ct[patient.masks["SpinalCord"].astype(bool)].mean() < 100  # soft cord inside the bony canal


def test_bad_settings_raise_input_errors():
    with pytest.raises(InputError, match="phantom.shape"):
        make_phantom(1, PhantomConfig(shape=[4, 96, 96]))
    with pytest.raises(InputError, match="n_beams"):
        make_phantom(1, PhantomConfig(n_beams=0))
    with pytest.raises(InputError, match="field of view"):
        make_phantom(1, PhantomConfig(shape=[40, 32, 32], spacing=[5.0, 2.0, 2.0]))
    with pytest.raises(InputError, match="index"):
        make_phantom(-1, PhantomConfig())


def test_aliases_cover_every_written_name(patient):
    for canon, written in patient.roi_names.items():
        assert written == canon or written in PHANTOM_ALIASES[canon]


# ---------------------------------------------------------------- DICOM files


def test_files_are_valid_dicom_with_consistent_uids(patient, case_dir):
    saved = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.RAISE  # VR lengths, formats
    try:
        datasets = {p.relative_to(case_dir).as_posix(): pydicom.dcmread(p) for p in case_dir.rglob("*.dcm")}
        for ds in datasets.values():
            ds.walk(lambda d, elem: elem.value)
    finally:
        pydicom_config.settings.reading_validation_mode = saved
    sop = {"CT": "1.2.840.10008.5.1.4.1.1.2", "RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3",
           "RTDOSE": "1.2.840.10008.5.1.4.1.1.481.2", "RTPLAN": "1.2.840.10008.5.1.4.1.1.481.5"}
    for name, ds in datasets.items():
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1", name
        assert ds.SOPClassUID == sop[ds.Modality] == ds.file_meta.MediaStorageSOPClassUID, name
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert len({ds.StudyInstanceUID for ds in datasets.values()}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets.values()}) == len(datasets)
    ct = [datasets[f"CT/{p.name}"] for p in _ct_files(case_dir)]
    rs, rd, rp = datasets["RS.dcm"], datasets["RD.dcm"], datasets["RP.dcm"]
    assert len({ds.SeriesInstanceUID for ds in ct}) == 1
    frame = ct[0].FrameOfReferenceUID
    assert {ds.FrameOfReferenceUID for ds in [*ct, rd, rp]} == {frame}
    ref = rs.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == frame
    series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == [ds.SOPInstanceUID for ds in ct]
    assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
    assert (rd.DoseUnits, rd.DoseType, rd.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    angles = [float(b.ControlPointSequence[0].GantryAngle) for b in rp.BeamSequence]
    assert angles == pytest.approx(patient.gantry_deg) and len(angles) == 7
    assert float(rp.DoseReferenceSequence[0].TargetPrescriptionDose) == RX
    kinds = {s.ROIName: o.RTROIInterpretedType for s, o in zip(rs.StructureSetROISequence,
                                                                 rs.RTROIObservationsSequence, strict=True)}
    assert kinds[patient.roi_names["PTV"]] == "PTV" and kinds[BODY_ROI_NAME] == "EXTERNAL"
    assert kinds[patient.roi_names["Heart"]] == "ORGAN"


def test_ct_series_reads_back_with_simpleitk(patient, case_dir):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(case_dir / "CT")))
    image = reader.Execute()
    assert Geometry.from_sitk(image).same_grid(patient.geometry, tol_mm=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(image).astype(np.int16), patient.ct)


def test_rtdose_reproduces_phantom_dose(patient, case_dir):
    rd = pydicom.dcmread(case_dir / "RD.dcm")
    grid = rd.pixel_array.astype(np.float64) * float(rd.DoseGridScaling)  # (frames, rows, cols) Gy
    g = patient.geometry
    x0, y0, z0 = (float(v) for v in rd.ImagePositionPatient)
    offsets = np.asarray(rd.GridFrameOffsetVector, dtype=float)
    assert offsets[0] == 0 and np.allclose(np.diff(offsets), g.spacing[0])
    assert [float(v) for v in rd.PixelSpacing] == [g.spacing[1], g.spacing[2]]
    k0, j0, i0 = np.round(g.world_to_index(np.array([x0, y0, z0]))).astype(int)
    assert np.allclose(g.world_to_index(np.array([x0, y0, z0])), [k0, j0, i0], atol=1e-6)  # CT-aligned box
    on_ct = np.zeros(g.shape)
    on_ct[k0:k0 + grid.shape[0], j0:j0 + grid.shape[1], i0:i0 + grid.shape[2]] = grid
    assert np.abs(on_ct - patient.dose).max() <= 1e-3 * patient.dose.max()
    assert grid.shape[1:] != g.shape[1:]  # the dose grid differs from the CT grid: readers must place it


def test_rtstruct_contours_rasterise_to_the_masks(patient, case_dir):
    rs = pydicom.dcmread(case_dir / "RS.dcm")
    cts = [pydicom.dcmread(p, stop_before_pixels=True) for p in _ct_files(case_dir)]
    z_of_uid = {ds.SOPInstanceUID: float(ds.ImagePositionPatient[2]) for ds in cts}
    ny, nx = int(cts[0].Rows), int(cts[0].Columns)
    x0, y0, _ = (float(v) for v in cts[0].ImagePositionPatient)
    row_mm, col_mm = (float(v) for v in cts[0].PixelSpacing)
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in cts])
    gx, gy = np.meshgrid(x0 + col_mm * np.arange(nx), y0 + row_mm * np.arange(ny))
    centres = np.column_stack([gx.ravel(), gy.ravel()])
    canonical = {written: canon for canon, written in patient.roi_names.items()} | {BODY_ROI_NAME: "body"}
    names = {int(s.ROINumber): canonical[s.ROIName] for s in rs.StructureSetROISequence}
    expected = dict(patient.masks) | {"body": patient.body}
    assert sorted(names.values()) == sorted(expected)
    for roi in rs.ROIContourSequence:
        name = names[int(roi.ReferencedROINumber)]
        mask = np.zeros(patient.geometry.shape, dtype=bool)
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            pts = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)  # (N, 3) mm
            assert len(pts) == int(contour.NumberOfContourPoints) and np.ptp(pts[:, 2]) == 0
            assert z_of_uid[contour.ContourImageSequence[0].ReferencedSOPInstanceUID] == pts[0, 2]
            k = int(np.argmin(np.abs(zs - pts[0, 2])))
            mask[k] ^= MplPath(pts[:, :2]).contains_points(centres).reshape(ny, nx)
        assert np.array_equal(mask, expected[name].astype(bool)), name


def test_sentinels_fill_the_identifying_fields(patient, case_dir):
    for path in case_dir.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(ds.PatientName) == "SENTINEL^NAME"
        assert ds.PatientID == patient.patient_id() and ds.PatientID.startswith("SENTINEL-ID-")
        assert ds.PatientBirthDate == "19010101"
        assert ds.InstitutionName == "SENTINEL-INSTITUTION"
        assert str(ds.OperatorsName) == "SENTINEL^OPERATOR"
        assert str(ds.ReferringPhysicianName) == "SENTINEL^PHYSICIAN"
        raw = path.read_bytes()
        missing = [s for s in SENTINELS if s.encode() not in raw]
        assert not missing, (path.name, missing)


def test_failed_write_leaves_no_case_folder(patient, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dicom_writer, "_rtdose", broken)
    with pytest.raises(OSError, match="disk full"):
        write_phantom_dicom(patient, tmp_path / "phantom_001")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- dose physics


def test_plan_dose_is_normalised_conformal_and_zero_outside_body(patient):
    dose, ptv = patient.dose, patient.masks["PTV"].astype(bool)
    assert np.median(dose[ptv]) == pytest.approx(RX, rel=0.01)
    assert np.percentile(dose[ptv], 5) > 0.93 * RX  # D95 coverage
    assert dose.max() < 1.15 * RX
    assert not dose[~patient.body.astype(bool)].any()
    # Beams are coplanar: slices well beyond the target's ends lie outside every aperture.
    z_ptv = np.nonzero(ptv.any(axis=(1, 2)))[0]
    far = int(np.ceil(30.0 / patient.geometry.spacing[0]))
    outside = [k for k in range(patient.geometry.shape[0]) if k < z_ptv[0] - far or k > z_ptv[-1] + far]
    assert outside, "the scan should extend beyond the target"
    assert dose[outside].max() < 0.1 * RX
    # Every beam deposits dose along its path: the body on the target's slices gets a low-dose bath.
    assert np.mean(dose[z_ptv[len(z_ptv) // 2]][patient.body[z_ptv[len(z_ptv) // 2]].astype(bool)] > 1.0) > 0.5


def _water_box() -> tuple[Geometry, np.ndarray, np.ndarray, np.ndarray]:
    """Water block 200 x 200 mm in-plane (so every axis-parallel ray has the same entrance)
    with a 40 mm wide square target centred on the origin."""
    g = Geometry(shape=(12, 64, 64), spacing=(5.0, 4.0, 4.0), origin=(-128.0, -128.0, 0.0))
    x = -128.0 + 4.0 * np.arange(64)
    gx, gy = np.meshgrid(x, x)
    body = np.broadcast_to((np.abs(gx) <= 100) & (np.abs(gy) <= 100), g.shape).astype(np.uint8)
    target = np.zeros(g.shape, dtype=np.uint8)
    target[4:8] = (np.abs(gx) <= 20) & (np.abs(gy) <= 20)
    return g, body, target, body.astype(np.float32)


@pytest.mark.parametrize("gantry", [0.0, 90.0])
def test_single_beam_attenuates_along_straight_rays(gantry):
    g, body, target, density = _water_box()
    dose = beam_dose(density, body, target, g, gantry, (0.0, 0.0))  # (z, y, x)
    k, c = 5, 32  # a target slice; the index of x = 0 and y = 0
    if gantry == 0.0:  # from anterior (-y) towards +y
        entrance, exit_ = dose[k, c - 10, c], dose[k, c + 10, c]  # y = -40 mm, +40 mm
        lateral = dose[k, c, :]
    else:  # from the patient's left (+x) towards -x
        entrance, exit_ = dose[k, c, c + 10], dose[k, c, c - 10]  # x = +40 mm, -40 mm
        lateral = dose[k, :, c]
    expected = np.exp(-MU_PER_MM * 80.0) * ((SAD_MM - 40.0) / (SAD_MM + 40.0)) ** 2
    assert exit_ / entrance == pytest.approx(expected, rel=5e-3)
    # Across the beam: flat inside the aperture, 50 % at the aperture edge (target edge 20 mm
    # + 6 mm margin, rounded to the 4 mm beam grid: 30 mm), near zero 30 mm further out.
    centre = lateral[c]
    right = lateral[c:] / centre  # from x = 0 outwards
    edge = np.interp(0.5, right[::-1], np.arange(len(right))[::-1] * 4.0)
    assert edge == pytest.approx(30.0, abs=1.0)
    assert right[15] < 0.02  # 60 mm off axis
    assert np.allclose(lateral[c - 3:c + 4] / centre, 1.0, atol=0.01)
    assert np.allclose(lateral[1:], lateral[1:][::-1], rtol=1e-4, atol=1e-6)  # symmetric about the axis
    assert dose[0].max() < 0.1 * centre  # 20 mm beyond the target's last slice + margin


def test_phantom_beam_entrance_exceeds_exit(patient):
    g = patient.geometry
    density = relative_density(patient.ct, patient.body)
    beam = beam_dose(density, patient.body, patient.masks["PTV"], g, 0.0, patient.isocenter_mm[:2])
    k, j, i = np.round(g.world_to_index(np.array(patient.isocenter_mm))).astype(int)
    rows = np.nonzero(patient.body[k, :, i])[0]
    step = int(round(30.0 / g.spacing[1]))
    assert beam[k, rows[0] + step, i] > 1.1 * beam[k, rows[-1] - step, i]
    assert not beam[k, : rows[0], i].any() and not beam[k, rows[-1] + 1:, i].any()

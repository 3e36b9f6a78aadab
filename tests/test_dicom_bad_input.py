"""Bad DICOM-RT input: each case gives an error (or warning) naming the case, the file and a fix,
and ingest leaves no partial output. Cases are edited copies of a few IBSI CT slices + RTSTRUCT,
with an RTDOSE written on the same grid (or dicompyler's RTDOSE, of another frame of reference)."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from dosediff.config import DatasetConfig
from dosediff.errors import InputError
from dosediff.ingest import ingest_case
from dosediff.io.dicom import read_dicom_case

IBSI_CASE = "STS_019"
FIRST, N_SLICES = 20, 8  # contiguous CT slices through the GTV
SENTINEL = "SENTINEL-PHI-7731"
Edit = Callable[[int, pydicom.Dataset], None]


def dataset_config(tmp_path: Path, **kw) -> DatasetConfig:
    settings = dict(name="t", source="dicom", input_dir=str(tmp_path), rois=["GTV_Mass"],
                    aliases={"GTV_Mass": ["GTV_Mass_CT"]})
    settings.update(kw)
    return DatasetConfig(**settings)


@pytest.fixture(scope="module")
def source(ibsi_dir: Path) -> dict:
    root = ibsi_dir / IBSI_CASE
    files = sorted((root / "dicom" / "image").glob("*.dcm"),
                   key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "CT_mask.nii.gz")))  # (z, y, x)
    return {"ct": files[FIRST:FIRST + N_SLICES], "rs": root / "dicom" / "mask" / "RS.dcm",
            "mask": mask[FIRST:FIRST + N_SLICES], "other_ct": sorted((ibsi_dir / "STS_002" / "dicom" / "image")
                                                                     .glob("*.dcm"))[:4]}


@pytest.fixture(scope="module")
def dose_template(dicompyler_dir: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(dicompyler_dir / "rtdose.dcm")
    del ds.DVHSequence
    return ds


def build_case(root: Path, source: dict, edit_ct: Edit | None = None, edit_rs: Edit | None = None,
               skip: tuple[int, ...] = (), name: str = "c1") -> Path:
    """Copy the CT subset (CT/) and RS.dcm into root/name, editing headers on the way."""
    folder = root / name
    (folder / "CT").mkdir(parents=True)
    for k, f in enumerate(source["ct"]):
        if k in skip:
            continue
        if edit_ct is None:
            shutil.copy(f, folder / "CT" / f.name)
        else:
            ds = pydicom.dcmread(f)
            edit_ct(k, ds)
            ds.save_as(folder / "CT" / f.name)
    ds = pydicom.dcmread(source["rs"])
    if edit_rs is not None:
        edit_rs(0, ds)
    ds.save_as(folder / "RS.dcm")
    return folder


def dose_field(xyz: np.ndarray) -> np.ndarray:
    """Known linear dose (Gy) in patient mm."""
    return 30.0 + 0.1 * xyz[..., 0] - 0.05 * xyz[..., 1] + 0.02 * xyz[..., 2]


def write_dose(path: Path, template: pydicom.Dataset, source: dict, edit: Edit | None = None) -> dict:
    """An RTDOSE on the CT's frame of reference: CT slices 1..6, 2.0 x 2.5 mm in-plane, inset 10 mm."""
    ct = [pydicom.dcmread(f, stop_before_pixels=True) for f in source["ct"]]
    ds = copy.deepcopy(template)
    x0, y0, _ = (float(v) for v in ct[0].ImagePositionPatient)
    zs = [float(c.ImagePositionPatient[2]) for c in ct[1:7]]
    rows, cols, step = 50, 45, zs[1] - zs[0]
    origin = np.array([x0 + 10.0, y0 + 10.0, zs[0]])
    kk, jj, ii = np.meshgrid(np.arange(len(zs)), np.arange(rows), np.arange(cols), indexing="ij")
    world = np.stack([origin[0] + 2.5 * ii, origin[1] + 2.0 * jj, origin[2] + step * kk], axis=-1)
    scaling = 1e-5
    stored = np.rint(dose_field(world) / scaling).astype(np.uint32)  # (z, y, x)
    ds.FrameOfReferenceUID = ct[0].FrameOfReferenceUID
    ds.ImagePositionPatient = [float(v) for v in origin]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [2.0, 2.5]  # [row (y), column (x)]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, len(zs)
    ds.GridFrameOffsetVector = [round(z - zs[0], 4) for z in zs]
    ds.DoseGridScaling = scaling
    ds.PixelData = stored.tobytes()
    if edit is not None:
        edit(0, ds)
    ds.save_as(path)
    return {"origin": origin, "shape": stored.shape, "spacing": (step, 2.0, 2.5)}


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def expect_error(folder: Path, dataset: DatasetConfig, file: str, *fragments: str) -> str:
    """Ingest must fail with a message naming case, file and fix, and leave nothing behind."""
    out_root = folder.parent / "out"
    before = snapshot(folder)
    with pytest.raises(InputError) as err:
        ingest_case(folder, "c1", dataset, out_root / "c1", require_dose=False)
    msg = str(err.value)
    assert "case c1" in msg and file in msg and "Fix:" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    assert not out_root.exists() or not any(out_root.iterdir()), "partial output left behind"
    assert snapshot(folder) == before
    return msg


# ---- the unedited small case reads correctly (control for every test below) ----

def test_control_case_reads_ct_mask_and_dose(tmp_path, source, dose_template) -> None:
    folder = build_case(tmp_path, source)
    info = write_dose(folder / "RD.dcm", dose_template, source)
    case = read_dicom_case(folder, "c1", dataset_config(tmp_path))
    assert case.ct.shape == (N_SLICES, 134, 136)
    np.testing.assert_array_equal(case.masks["GTV_Mass"], source["mask"])
    assert case.masks["GTV_Mass"].sum() > 100

    idx = np.stack(np.meshgrid(*[np.arange(n) for n in case.ct.shape], indexing="ij"), axis=-1)
    world = case.geometry.index_to_world(idx)  # (z, y, x, 3) mm
    rel = (world - info["origin"]) / np.array([2.5, 2.0, info["spacing"][0]])  # dose-grid index (x, y, z)
    upper = np.array(info["shape"][::-1]) - 1
    inside = np.all((rel >= -1e-6) & (rel <= upper + 1e-6), axis=-1)
    assert inside[1:7].any(axis=(1, 2)).all() and not inside[[0, 7]].any()  # edge frames kept, others 0
    np.testing.assert_allclose(case.dose[inside], dose_field(world)[inside], atol=1e-4)
    assert np.all(case.dose[~inside] == 0)


# ---- CT series ----

def test_missing_slice(tmp_path, source) -> None:
    folder = build_case(tmp_path, source, skip=(4,))
    expect_error(folder, dataset_config(tmp_path), source["ct"][5].name, "missing slice")


def test_non_uniform_slice_spacing(tmp_path, source) -> None:
    def shift(k: int, ds: pydicom.Dataset) -> None:
        if k >= 4:
            ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.6
    folder = build_case(tmp_path, source, edit_ct=shift)
    expect_error(folder, dataset_config(tmp_path), source["ct"][4].name, "uniform slice spacing")


def test_gantry_tilt_attribute(tmp_path, source) -> None:
    def tilt(k: int, ds: pydicom.Dataset) -> None:
        ds.GantryDetectorTilt = 12.0
    folder = build_case(tmp_path, source, edit_ct=tilt)
    expect_error(folder, dataset_config(tmp_path), source["ct"][0].name, "GantryDetectorTilt 12")


def test_gantry_tilt_from_slice_positions(tmp_path, source) -> None:
    def tilt(k: int, ds: pydicom.Dataset) -> None:  # origins drift in y as on a tilted gantry
        ds.ImagePositionPatient[1] = float(ds.ImagePositionPatient[1]) + k * 3.27 * np.tan(np.radians(12))
    folder = build_case(tmp_path, source, edit_ct=tilt)
    msg = expect_error(folder, dataset_config(tmp_path), source["ct"][-1].name, "gantry tilt")
    assert "12.0 degrees" in msg


def test_inconsistent_pixel_spacing_within_the_series(tmp_path, source) -> None:
    def respace(k: int, ds: pydicom.Dataset) -> None:
        if k == 2:
            ds.PixelSpacing = [1.2, 1.2]
    folder = build_case(tmp_path, source, edit_ct=respace)
    expect_error(folder, dataset_config(tmp_path), source["ct"][2].name, "PixelSpacing", "single consistent series")


def test_truncated_dicom_file(tmp_path, source) -> None:
    folder = build_case(tmp_path, source)
    victim = folder / "CT" / source["ct"][3].name
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size * 6 // 10])
    expect_error(folder, dataset_config(tmp_path), victim.name, "truncated", "remove")


def test_non_dicom_file(tmp_path, source) -> None:
    folder = build_case(tmp_path, source)
    (folder / "notes.txt").write_text("planning notes\n" * 20)
    expect_error(folder, dataset_config(tmp_path), "notes.txt", "not a DICOM file", "remove notes.txt")


def test_empty_folder(tmp_path) -> None:
    folder = tmp_path / "c1"
    (folder / "sub").mkdir(parents=True)
    expect_error(folder, dataset_config(tmp_path), "<c1>", "empty folder")  # relative to the case (issue 9)


def test_no_ct_series(tmp_path, source) -> None:
    folder = tmp_path / "c1"
    folder.mkdir()
    shutil.copy(source["rs"], folder / "RS.dcm")
    expect_error(folder, dataset_config(tmp_path), "<c1>", "no CT series")


# ---- frames of reference, dose files ----

def test_rtstruct_of_another_frame_of_reference(tmp_path, source) -> None:
    other = generate_uid()

    def move(k: int, ds: pydicom.Dataset) -> None:
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = other
        for roi in ds.StructureSetROISequence:
            roi.ReferencedFrameOfReferenceUID = other
    folder = build_case(tmp_path, source, edit_rs=move)
    expect_error(folder, dataset_config(tmp_path), "RS.dcm", f"FrameOfReferenceUID {other}")


def test_rtdose_of_another_frame_of_reference(tmp_path, source, dicompyler_dir) -> None:
    folder = build_case(tmp_path, source)
    shutil.copy(dicompyler_dir / "rtdose.dcm", folder / "rtdose.dcm")
    expect_error(folder, dataset_config(tmp_path), "rtdose.dcm", "FrameOfReferenceUID 2.16.840")


def test_rtdose_without_dose_grid_scaling(tmp_path, source, dose_template) -> None:
    folder = build_case(tmp_path, source)
    write_dose(folder / "RD.dcm", dose_template, source, edit=lambda k, ds: delattr(ds, "DoseGridScaling"))
    expect_error(folder, dataset_config(tmp_path), "RD.dcm", "no DoseGridScaling")


def test_rtdose_in_relative_units(tmp_path, source, dose_template) -> None:
    folder = build_case(tmp_path, source)
    write_dose(folder / "RD.dcm", dose_template, source, edit=lambda k, ds: setattr(ds, "DoseUnits", "RELATIVE"))
    expect_error(folder, dataset_config(tmp_path), "RD.dcm", "DoseUnits RELATIVE", "absolute units")


def test_beam_dose_is_used_with_a_warning(tmp_path, source, dose_template, caplog) -> None:
    folder = build_case(tmp_path, source)
    write_dose(folder / "RD.dcm", dose_template, source, edit=lambda k, ds: setattr(ds, "DoseSummationType", "BEAM"))
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        case = read_dicom_case(folder, "c1", dataset_config(tmp_path))
    assert case.dose is not None
    assert any("BEAM" in r.getMessage() and "one beam only" in r.getMessage() and "RD.dcm" in r.getMessage()
               for r in caplog.records)


def test_rtplan_prescription_is_logged(tmp_path, source, dose_template, dicompyler_dir, caplog) -> None:
    folder = build_case(tmp_path, source)
    write_dose(folder / "RD.dcm", dose_template, source)  # keeps the template's reference to rtplan.dcm
    shutil.copy(dicompyler_dir / "rtplan.dcm", folder / "rtplan.dcm")
    with caplog.at_level(logging.INFO, logger="dosediff"):
        case = read_dicom_case(folder, "c1", dataset_config(tmp_path, prescription_gy=50.0))
    assert case.prescription_gy == 50.0
    # Not the file name: Eclipse puts the patient ID in it (issue 9).
    assert any("the RTPLAN prescribes up to 14 Gy" in r.getMessage() for r in caplog.records)
    assert not any("rtplan.dcm" in r.getMessage() for r in caplog.records)


def test_several_doses_resolved_by_summation_type_or_refused(tmp_path, source, dose_template) -> None:
    folder = build_case(tmp_path, source)
    write_dose(folder / "RD_plan.dcm", dose_template, source)
    write_dose(folder / "RD_beam.dcm", dose_template, source,
               edit=lambda k, ds: (setattr(ds, "DoseSummationType", "BEAM"), setattr(ds, "DoseGridScaling", 5e-6)))
    case = read_dicom_case(folder, "c1", dataset_config(tmp_path))
    assert 25 < float(case.dose.max()) < 40  # the PLAN dose (the BEAM one is half of it)
    write_dose(folder / "RD_plan2.dcm", dose_template, source)
    msg = expect_error(folder, dataset_config(tmp_path), "RD_plan.dcm", "RD_plan2.dcm", "2 RTDOSE files")
    assert "remove the extra RTDOSE" in msg and "RD_beam.dcm" not in msg


def test_several_ct_series_resolved_by_rtstruct_reference(tmp_path, source) -> None:
    folder = build_case(tmp_path, source)
    (folder / "other").mkdir()
    for f in source["other_ct"]:
        shutil.copy(f, folder / "other" / f.name)
    case = read_dicom_case(folder, "c1", dataset_config(tmp_path))
    np.testing.assert_array_equal(case.masks["GTV_Mass"], source["mask"])
    # Without the RTSTRUCT's references the two series cannot be told apart.
    (folder / "RS.dcm").unlink()
    expect_error(folder, dataset_config(tmp_path), "<c1>", "2 CT series", "remove the extra CT series")


def test_two_rtstructs_for_one_ct_are_refused(tmp_path, source) -> None:
    folder = build_case(tmp_path, source)
    shutil.copy(folder / "RS.dcm", folder / "RS_copy.dcm")
    expect_error(folder, dataset_config(tmp_path), "RS_copy.dcm", "2 RTSTRUCT files")


# ---- ROI names ----

def _rename(new: str) -> Edit:
    def edit(k: int, ds: pydicom.Dataset) -> None:
        ds.StructureSetROISequence[0].ROIName = new
    return edit


def test_unknown_roi_name_warns(tmp_path, source, caplog) -> None:
    folder = build_case(tmp_path, source, edit_rs=_rename("Tumour blob"))
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        case = read_dicom_case(folder, "c1", dataset_config(tmp_path))
    assert case.masks == {}
    msgs = [r.getMessage() for r in caplog.records if "Tumour blob" in r.getMessage()]
    assert len(msgs) == 1
    assert "case c1" in msgs[0] and "RS.dcm" in msgs[0] and "Fix:" in msgs[0] and "dataset.aliases" in msgs[0]


def test_aliases_match_ignoring_case_spaces_underscores(tmp_path, source, caplog) -> None:
    folder = build_case(tmp_path, source, edit_rs=_rename("gtv  mass_ct"))
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        case = read_dicom_case(folder, "c1", dataset_config(tmp_path))
    np.testing.assert_array_equal(case.masks["GTV_Mass"], source["mask"])
    assert not caplog.records
    ignored = read_dicom_case(folder, "c1", dataset_config(tmp_path, aliases={}, ignore_rois=["GTV Mass CT"]))
    assert ignored.masks == {} and not caplog.records


def test_required_roi_missing(tmp_path, source) -> None:
    folder = build_case(tmp_path, source, edit_rs=_rename("Tumour blob"))
    msg = expect_error(folder, dataset_config(tmp_path, required_rois=["GTV_Mass"]), "RS.dcm",
                       "required ROIs ['GTV_Mass']", "dataset.aliases")
    assert "Tumour blob" in msg  # the candidate name is shown


def test_required_roi_with_no_contours_on_the_ct(tmp_path, source) -> None:
    def far(k: int, ds: pydicom.Dataset) -> None:  # all contours 1 m away from the CT slices
        for contour in ds.ROIContourSequence[0].ContourSequence:
            data = [float(v) for v in contour.ContourData]
            contour.ContourData = [v + 1000.0 if i % 3 == 2 else v for i, v in enumerate(data)]
    folder = build_case(tmp_path, source, edit_rs=far)
    expect_error(folder, dataset_config(tmp_path, required_rois=["GTV_Mass"]), "RS.dcm", "required ROIs")


# ---- no patient-identifying field reaches messages, logs or outputs ----

def test_identifying_fields_never_leave_the_reader(tmp_path, source, dose_template, caplog) -> None:
    def mark(k: int, ds: pydicom.Dataset) -> None:
        ds.PatientName = SENTINEL
        ds.PatientID = SENTINEL
        ds.PatientBirthDate = "19000101"
        ds.InstitutionName = SENTINEL
        ds.OperatorsName = SENTINEL
        ds.ReferringPhysicianName = SENTINEL
    folder = build_case(tmp_path, source, edit_ct=mark, edit_rs=mark)
    write_dose(folder / "RD.dcm", dose_template, source,
               edit=lambda k, ds: (mark(k, ds), setattr(ds, "DoseSummationType", "FRACTION")))
    (folder / ".DS_Store").write_bytes(b"x")
    out = tmp_path / "out" / "c1"
    with caplog.at_level(logging.DEBUG, logger="dosediff"):
        ingest_case(folder, "c1", dataset_config(tmp_path, aliases={}), out)  # GTV_Mass_CT -> unknown, warned
        (folder / "CT" / source["ct"][4].name).unlink()
        with pytest.raises(InputError) as err:
            read_dicom_case(folder, "c1", dataset_config(tmp_path))
    texts = [r.getMessage() for r in caplog.records] + [str(err.value)]
    assert len(caplog.records) >= 3  # hidden file, FRACTION dose, unknown ROI
    assert not any(SENTINEL in t or "19000101" in t for t in texts)
    for f in out.rglob("*"):
        if f.is_file():
            assert SENTINEL.encode() not in f.read_bytes()
    assert SENTINEL not in (out / "case.json").read_text()

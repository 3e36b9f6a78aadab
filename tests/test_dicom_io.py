"""DICOM-RT readers against real reference data (IBSI, dicompyler) and analytic cases."""

from __future__ import annotations

import copy
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath

from dosediff.config import DatasetConfig
from dosediff.errors import InputError
from dosediff.io.dicom import read_dicom_case
from dosediff.io.rtdose import resample_to
from dosediff.io.rtstruct import rasterize_roi
from dosediff.volume import Geometry
from dicom_readers import read_ct_series, read_rtdose, read_rtstruct

IBSI_CASES = ["STS_002", "STS_003", "STS_019"]
META_KEYS = {"source", "study_uid", "series_uid", "frame_of_reference_uid", "ct_sop_uids"}


def ibsi_dataset(tmp_path: Path) -> DatasetConfig:
    return DatasetConfig(name="t", source="dicom", input_dir=str(tmp_path), rois=["GTV_Mass"],
                         aliases={"GTV_Mass": ["GTV_Mass_CT"]})


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.astype(bool).sum() + b.astype(bool).sum()))


# ---- IBSI: CT and mask against the independent reference NIfTI files ----

@pytest.mark.parametrize("case", IBSI_CASES)
def test_ibsi_case_matches_reference(ibsi_dir: Path, tmp_path: Path, case: str, record_property) -> None:
    root = ibsi_dir / case
    result = read_dicom_case(root / "dicom", case, ibsi_dataset(tmp_path))

    ref = sitk.ReadImage(str(root / "CT_image.nii.gz"))
    ref_ct = sitk.GetArrayFromImage(ref)  # (z, y, x)
    assert result.ct.dtype == np.int16
    assert result.ct.shape == ref_ct.shape
    np.testing.assert_allclose(result.geometry.spacing, ref.GetSpacing()[::-1], atol=1e-3)
    np.testing.assert_allclose(result.geometry.origin, ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(result.geometry.direction, ref.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(result.ct, ref_ct.astype(np.int16))

    ref_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "CT_mask.nii.gz")))
    d = dice(result.masks["GTV_Mass"], ref_mask)
    record_property("dice_GTV_Mass", d)
    assert d >= 0.99
    # Voxel-centre even-odd rasterisation reproduces the reference exactly (FACTS.md).
    np.testing.assert_array_equal(result.masks["GTV_Mass"], ref_mask)

    assert result.dose is None
    assert set(result.meta) == META_KEYS and result.meta["source"] == "dicom"
    assert len(result.meta["ct_sop_uids"]) == result.ct.shape[0]


def test_ct_sorted_by_position_not_by_file_order_or_slice_tags(ibsi_dir: Path, tmp_path: Path) -> None:
    """Shuffled files with misleading SliceLocation/SliceThickness/InstanceNumber give the same volume."""
    src = sorted((ibsi_dir / "STS_019" / "dicom" / "image").glob("*.dcm"))
    ref = sitk.ReadImage(str(ibsi_dir / "STS_019" / "CT_image.nii.gz"))
    rng = random.Random(0)
    copies = []
    for i, f in enumerate(src):
        ds = pydicom.dcmread(f)
        ds.SliceLocation = rng.uniform(-100, 100)
        ds.SliceThickness = 5.0
        ds.InstanceNumber = rng.randint(1, 999)
        out = tmp_path / f"slice_{rng.random():.8f}.dcm"
        ds.save_as(out)
        copies.append(out)
    rng.shuffle(copies)
    hu, geo, uids = read_ct_series(copies, "STS_019")
    np.testing.assert_array_equal(hu, sitk.GetArrayFromImage(ref).astype(np.int16))
    np.testing.assert_allclose(geo.spacing, ref.GetSpacing()[::-1], atol=1e-3)
    # SOP UIDs follow the slice order: check against each file's own position.
    z_of = {}
    for f in copies:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        z_of[str(ds.SOPInstanceUID)] = float(ds.ImagePositionPatient[2])
    zs = [z_of[u] for u in uids["ct_sop_uids"]]
    assert zs == sorted(zs) and len(zs) == len(src)
    assert set(uids) == {"study_uid", "series_uid", "frame_of_reference_uid", "ct_sop_uids"}


# ---- dicompyler: RTDOSE geometry/scaling and the rasteriser on a dose grid ----

def test_dicompyler_rtdose(dicompyler_dir: Path) -> None:
    dose, geo, refs = read_rtdose(dicompyler_dir / "rtdose.dcm", "dp")
    assert dose.shape == (98, 129, 194) and dose.dtype == np.float32
    np.testing.assert_allclose(geo.spacing, (3.0, 2.5, 2.5))
    assert abs(float(dose.max()) - 14.68) < 0.01
    np.testing.assert_allclose(geo.origin, (-228.6541915, -419.2444776, -122.4407))
    assert refs["frame_of_reference_uid"] == "2.16.840.1.113662.2.12.0.3057.1241703565.36"
    assert refs["referenced_plan_uid"] == "1.2.246.352.71.5.320687012.24189.20090603083342"
    assert refs["dose_summation_type"] == "PLAN"


def test_dicompyler_heart_on_dose_grid(dicompyler_dir: Path, record_property) -> None:
    """Heart rasterised on the RTDOSE grid: dicompyler-core's test expects 440.23 cc, mean 0.6475 Gy."""
    dose, geo, refs = read_rtdose(dicompyler_dir / "rtdose.dcm", "dp")
    rois, frame = read_rtstruct(dicompyler_dir / "rtss.dcm", "dp")
    assert frame == refs["frame_of_reference_uid"]
    assert len(rois) == 10 and rois["Areola"] == []
    heart = rasterize_roi(rois["Heart"], geo)
    volume_cc = heart.sum() * float(np.prod(geo.spacing)) / 1000
    record_property("heart_cc", float(volume_cc))
    assert abs(volume_cc - 440.23) < 0.01 * 440.23
    assert abs(float(dose[heart > 0].mean()) - 0.6475) < 0.01 * 0.6475


# ---- GridFrameOffsetVector forms and PixelSpacing order, on edited copies of rtdose.dcm ----

N_FRAMES = 12


@pytest.fixture(scope="module")
def small_dose(dicompyler_dir: Path) -> pydicom.Dataset:
    """rtdose.dcm cut to its first N_FRAMES frames (relative offsets 0, 3, ...)."""
    ds = pydicom.dcmread(dicompyler_dir / "rtdose.dcm")
    frames = ds.pixel_array[:N_FRAMES]  # (frames, rows, cols) uint32
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.NumberOfFrames = N_FRAMES
    ds.GridFrameOffsetVector = [float(v) for v in ds.GridFrameOffsetVector[:N_FRAMES]]
    if "DVHSequence" in ds:
        del ds.DVHSequence
    return ds


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path)
    return path


def test_frame_offset_forms_give_the_same_dose(small_dose: pydicom.Dataset, dicompyler_dir: Path,
                                               tmp_path: Path) -> None:
    full = pydicom.dcmread(dicompyler_dir / "rtdose.dcm")
    expected = full.pixel_array[:N_FRAMES].astype(np.float64) * float(full.DoseGridScaling)  # Gy
    base, base_geo, _ = read_rtdose(_save(small_dose, tmp_path / "relative.dcm"), "dp")
    np.testing.assert_allclose(base, expected, rtol=1e-6)
    assert base_geo.spacing == (3.0, 2.5, 2.5)

    ipp_z = float(small_dose.ImagePositionPatient[2])
    rel = np.array([float(v) for v in small_dose.GridFrameOffsetVector])
    top = ipp_z + rel[-1]
    frames = small_dose.pixel_array
    variants = {}
    ds = copy.deepcopy(small_dose)
    ds.GridFrameOffsetVector = list(ipp_z + rel)  # absolute, increasing
    variants["absolute"] = ds
    for name, offsets in [("relative_decreasing", -rel), ("absolute_decreasing", top - rel)]:
        ds = copy.deepcopy(small_dose)
        ds.ImagePositionPatient = [small_dose.ImagePositionPatient[0], small_dose.ImagePositionPatient[1], top]
        ds.PixelData = np.ascontiguousarray(frames[::-1]).tobytes()  # first frame is now the top one
        ds.GridFrameOffsetVector = list(offsets)
        variants[name] = ds
    for name, ds in variants.items():
        dose, geo, _ = read_rtdose(_save(ds, tmp_path / f"{name}.dcm"), "dp")
        np.testing.assert_array_equal(dose, base, err_msg=name)
        assert geo.same_grid(base_geo, tol_mm=1e-6), name


def test_pixel_spacing_is_row_then_column(small_dose: pydicom.Dataset, tmp_path: Path) -> None:
    ds = copy.deepcopy(small_dose)
    ds.PixelSpacing = [2.0, 2.5]  # [row spacing = y, column spacing = x]
    _, geo, _ = read_rtdose(_save(ds, tmp_path / "ps.dcm"), "dp")
    assert geo.spacing == (3.0, 2.0, 2.5)


@pytest.mark.parametrize("offsets, fragment", [
    (lambda rel, z: np.where(np.arange(len(rel)) > 5, rel + 1.0, rel), "GridFrameOffsetVector steps"),
    (lambda rel, z: rel + 7.0, "first GridFrameOffsetVector value"),
])
def test_bad_frame_offsets_are_input_errors(small_dose, tmp_path, offsets, fragment) -> None:
    ds = copy.deepcopy(small_dose)
    rel = np.array([float(v) for v in ds.GridFrameOffsetVector])
    ds.GridFrameOffsetVector = list(offsets(rel, float(ds.ImagePositionPatient[2])))
    path = _save(ds, tmp_path / "bad_offsets.dcm")
    with pytest.raises(InputError) as err:
        read_rtdose(path, "dp")
    msg = str(err.value)
    assert fragment in msg and "case dp" in msg and "bad_offsets.dcm" in msg and "Fix:" in msg


# ---- resample_to: analytic linear fields ----

def _linear(xyz: np.ndarray) -> np.ndarray:
    """A positive linear field in patient mm (so 0 can only mean 'outside')."""
    return 50.0 + 0.5 * xyz[..., 0] - 0.25 * xyz[..., 1] + 0.1 * xyz[..., 2]


def _grid_world(geo: Geometry) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in geo.shape], indexing="ij"), axis=-1)  # (z, y, x, 3)
    return geo.index_to_world(idx)  # (z, y, x, 3) mm


@pytest.mark.parametrize("angle_deg", [0.0, 30.0])
def test_resample_reproduces_linear_field_and_zero_outside(angle_deg: float) -> None:
    src = Geometry(shape=(6, 7, 8), spacing=(3.0, 2.5, 2.0), origin=(10.0, -20.0, 5.0))
    dose = _linear(_grid_world(src)).astype(np.float32)
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    dst = Geometry(shape=(14, 16, 18), spacing=(1.5, 1.3, 1.1), origin=(7.0, -24.0, 1.0),
                   direction=tuple(rot.ravel()))
    out = resample_to(dose, src, dst)
    assert out.shape == dst.shape and out.dtype == np.float32
    world = _grid_world(dst)
    idx = src.world_to_index(world)  # (z, y, x, 3) source indices
    upper = np.asarray(src.shape) - 1
    inside = np.all((idx >= 1e-3) & (idx <= upper - 1e-3), axis=-1)
    outside = np.any((idx < -1e-3) | (idx > upper + 1e-3), axis=-1)
    assert inside.sum() > 100 and outside.sum() > 100
    np.testing.assert_allclose(out[inside], _linear(world)[inside], rtol=1e-5)
    assert np.all(out[outside] == 0)


EDGE_GRIDS = {
    "aligned": Geometry(shape=(13, 16, 19), spacing=(0.1, 0.7 / 3, 1.1 / 3), origin=(0.1, 0.2, 0.3)),
    # Rotated 90 degrees in-plane (x index along +y, y index along -x): the general path.
    "rotated": Geometry(shape=(13, 19, 16), spacing=(0.1, 1.1 / 3, 0.7 / 3), origin=(0.1 + 6 * 1.1, 0.2, 0.3),
                        direction=(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)),
}


@pytest.mark.parametrize("grid", list(EDGE_GRIDS))
def test_resample_keeps_values_on_the_source_edge(grid: str) -> None:
    """A destination grid whose outer voxels sit exactly on the source's outer voxel centres."""
    src = Geometry(shape=(5, 6, 7), spacing=(0.3, 0.7, 1.1), origin=(0.1, 0.2, 0.3))
    dose = _linear(_grid_world(src)).astype(np.float32)
    dst = EDGE_GRIDS[grid]
    out = resample_to(dose, src, dst)
    np.testing.assert_allclose(out, _linear(_grid_world(dst)), rtol=1e-5)  # no zeros on any face
    np.testing.assert_array_equal(resample_to(dose, src, src), dose)


# ---- rasterize_roi: analytic masks and a reference point-in-polygon implementation ----

def _square(x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float)


def test_rasterize_squares_holes_and_slice_assignment() -> None:
    geo = Geometry(shape=(4, 10, 12), spacing=(2.0, 1.0, 1.0))
    outer = _square(1.5, 5.5, 2.5, 6.5, 4.0)  # voxel centres x 2..5, y 3..6 on slice 2
    hole = _square(2.5, 4.5, 3.5, 5.5, 4.0)  # x 3..4, y 4..5
    expected = np.zeros(geo.shape, np.uint8)
    expected[2, 3:7, 2:6] = 1
    np.testing.assert_array_equal(rasterize_roi([outer], geo), expected)
    expected[2, 4:6, 3:5] = 0
    np.testing.assert_array_equal(rasterize_roi([outer, hole], geo), expected)

    # Nearest slice; farther than half a slice outside the grid -> skipped.
    assert rasterize_roi([_square(1.5, 5.5, 2.5, 6.5, 4.9)], geo)[2].sum() == 16
    assert rasterize_roi([_square(1.5, 5.5, 2.5, 6.5, 5.1)], geo)[3].sum() == 16
    assert rasterize_roi([_square(1.5, 5.5, 2.5, 6.5, -0.9)], geo)[0].sum() == 16
    assert rasterize_roi([_square(1.5, 5.5, 2.5, 6.5, -1.1)], geo).sum() == 0
    assert rasterize_roi([_square(1.5, 5.5, 2.5, 6.5, 7.2)], geo).sum() == 0
    # Partly outside the plane: clipped, not wrapped.
    assert rasterize_roi([_square(-5.5, 2.5, -3.5, 1.5, 0.0)], geo)[0].sum() == 3 * 2


def _star(rng: np.random.Generator, centre: tuple[float, float], radius: float, n: int = 23) -> np.ndarray:
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.4, 1.0, n)
    return np.column_stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)])  # (n, 2) x, y


def test_rasterize_matches_reference_point_in_polygon() -> None:
    rng = np.random.default_rng(1)
    geo = Geometry(shape=(3, 40, 50), spacing=(2.0, 0.9, 1.1), origin=(-10.0, 5.0, 0.0))
    ys, xs = np.mgrid[0:40, 0:50]
    centres = np.column_stack([xs.ravel() * 1.1 - 10.0, ys.ravel() * 0.9 + 5.0])  # (n, 2) x, y mm
    outer = _star(rng, (17.0, 23.0), 16.0)
    inner = _star(rng, (17.0, 23.0), 5.0)  # inside the outer star's inner radius: a hole
    separate = _star(rng, (-4.0, 35.0), 4.0)
    z = 2.0
    contours = [np.column_stack([p, np.full(len(p), z)]) for p in (outer, inner, separate)]
    expected = np.zeros(centres.shape[0], bool)
    for p in (outer, inner, separate):
        expected ^= MplPath(p).contains_points(centres)
    mask = rasterize_roi(contours, geo)
    np.testing.assert_array_equal(mask[1].ravel().astype(bool), expected)
    assert mask[0].sum() == 0 and mask[2].sum() == 0 and expected.sum() > 200

    # The same points on a grid flipped in x and y (as some dose grids are): the flipped mask.
    flipped = Geometry(shape=geo.shape, spacing=geo.spacing, origin=(-10.0 + 49 * 1.1, 5.0 + 39 * 0.9, 0.0),
                       direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    np.testing.assert_array_equal(rasterize_roi(contours, flipped), mask[:, ::-1, ::-1])


def test_point_contours_are_skipped_with_one_warning(ibsi_dir: Path, tmp_path: Path, caplog) -> None:
    ds = pydicom.dcmread(ibsi_dir / "STS_019" / "dicom" / "mask" / "RS.dcm")
    n = len(ds.ROIContourSequence[0].ContourSequence)
    for k in range(2):
        point = copy.deepcopy(ds.ROIContourSequence[0].ContourSequence[0])
        point.ContourGeometricType = "POINT"
        point.NumberOfContourPoints = 1
        point.ContourData = [0.0, 0.0, float(point.ContourData[2])]
        ds.ROIContourSequence[0].ContourSequence.append(point)
    path = tmp_path / "RS_points.dcm"
    ds.save_as(path)
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        rois, _ = read_rtstruct(path, "c1")
    assert len(rois["GTV_Mass_CT"]) == n
    warnings = [r.getMessage() for r in caplog.records if "POINT" in r.getMessage()]
    assert len(warnings) == 1 and "RS_points.dcm" in warnings[0] and "case c1" in warnings[0]


def test_case_folder_with_extra_files_and_subfolders(ibsi_dir: Path, tmp_path: Path, caplog) -> None:
    """Recursive scan; hidden files and other modalities are ignored with a warning."""
    case = tmp_path / "case"
    shutil.copytree(ibsi_dir / "STS_019" / "dicom", case / "export" / "dicom")
    (case / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    other = pydicom.dcmread(ibsi_dir / "STS_019" / "dicom" / "mask" / "RS.dcm")
    other.Modality = "REG"
    other.save_as(case / "registration.dcm")
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        result = read_dicom_case(case, "c1", ibsi_dataset(tmp_path))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert ".DS_Store" in text and "registration.dcm (REG)" in text
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(ibsi_dir / "STS_019" / "CT_mask.nii.gz")))
    np.testing.assert_array_equal(result.masks["GTV_Mass"], ref)

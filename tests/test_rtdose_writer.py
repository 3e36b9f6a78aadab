"""Predicted dose -> RTDOSE: reads back (pydicom and SimpleITK) onto the CT's geometry."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dosediff.errors import InputError
from dosediff.io.rtdose_writer import write_rtdose
from dosediff.volume import Geometry

REFS = {"study_uid": "1.2.3.4", "frame_of_reference_uid": "1.2.3.5", "ct_sop_uids": ["1.2.3.6"]}


def _dose(shape: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return (62.0 * np.exp(-(x**2 + y**2 + z**2) / 0.3)).astype(np.float32)


@pytest.mark.parametrize(
    "direction",
    [(1, 0, 0, 0, 1, 0, 0, 0, 1), (1, 0, 0, 0, 1, 0, 0, 0, -1)],
    ids=["axial", "z-reversed"],
)
def test_rtdose_reads_back_on_ct_geometry(tmp_path, direction):
    geo = Geometry(shape=(7, 12, 15), spacing=(3.0, 1.5, 2.0), origin=(-20.5, 30.25, -102.0), direction=direction)
    dose = _dose(geo.shape)
    path = tmp_path / "RD.dcm"
    write_rtdose(dose, geo, REFS, path)

    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTDOSE" and ds.FrameOfReferenceUID == REFS["frame_of_reference_uid"]
    assert ds.StudyInstanceUID == REFS["study_uid"] and str(ds.PatientID) == ""
    pix = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)
    assert np.abs(pix - dose).max() <= 0.005 * dose.max()
    # Geometry from the DICOM attributes, as a planning system would place it.
    offsets = np.asarray(ds.GridFrameOffsetVector, dtype=float)
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    for k in (0, geo.shape[0] - 1):
        expected = geo.index_to_world(np.array([k, 0, 0]))
        np.testing.assert_allclose(ipp + offsets[k] * normal, expected, atol=1e-4)
    np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], geo.spacing[1:], atol=1e-6)

    image = sitk.ReadImage(str(path))
    back = sitk.GetArrayFromImage(image).astype(np.float64) * float(ds.DoseGridScaling)
    sitk_geo = Geometry.from_sitk(image)
    if direction[-1] < 0:  # SimpleITK orders frames along the normal, i.e. reversed here
        back = back[::-1]
    else:
        assert sitk_geo.same_grid(geo)
    assert np.abs(back - dose).max() <= 0.005 * dose.max()


def test_rtdose_needs_dicom_references(tmp_path):
    geo = Geometry(shape=(2, 3, 4), spacing=(1, 1, 1))
    with pytest.raises(InputError, match="frame_of_reference_uid"):
        write_rtdose(np.zeros(geo.shape, np.float32), geo, {"study_uid": "1.2"}, tmp_path / "RD.dcm")
    assert not list(tmp_path.iterdir())

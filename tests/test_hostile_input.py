"""Issue 9, defects 5-8: no silent wrong data, no patient identity in messages, no raw traceback.
Inputs are edited copies of a small phantom patient whose header fields hold sentinels."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.dataelem import RawDataElement

from dosediff.config import DatasetConfig, PhantomConfig, PreprocessConfig
from dosediff.data.h5 import read_case_h5
from dosediff.errors import InputError
from dosediff.ingest import ingest_case
from dosediff.io import nifti
from dosediff.io.dicom import read_dicom_case
from dosediff.phantom import SENTINELS, phantom_dataset_config, write_phantom_case

REPO = Path(__file__).resolve().parents[1]
SMALL = PhantomConfig(n_cases=3, shape=[12, 32, 32], spacing=[6.0, 5.0, 5.0], n_beams=3)
DATASET = phantom_dataset_config()


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "src"
    write_phantom_case(folder, "p", 1, SMALL)
    return folder


@pytest.fixture
def case(src, tmp_path) -> Path:
    folder = tmp_path / "MRN12345"
    shutil.copytree(src, folder)
    return folder


def _edit(path: Path, fn) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def _raw(ds: pydicom.Dataset, keyword: str, text: str) -> None:
    """Store damaged text under the tag's own VR (pydicom would refuse to encode it)."""
    tag = pydicom.tag.Tag(pydicom.datadict.tag_for_keyword(keyword))
    raw = text.encode() + (b" " if len(text) % 2 else b"")
    ds._dict[tag] = RawDataElement(tag, pydicom.datadict.dictionary_VR(tag), len(raw), raw, 0, False, True)


def _ct(folder: Path, k: int = 3) -> Path:
    return sorted(folder.rglob("CT.*.dcm"), key=lambda p: int(p.name.split(".")[1]))[k]


def _error(folder: Path, *fragments: str) -> str:
    with pytest.raises(InputError) as err:
        read_dicom_case(folder, "anon", DATASET)
    msg = str(err.value)
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# --- 5: silent wrong data -------------------------------------------------------------------

def test_truncated_nifti_is_an_error_on_read(tmp_path, case):
    out = tmp_path / "out" / "anon"
    ingest_case(case, "anon", DATASET, out)
    dose = out / "dose.nii.gz"
    blob = dose.read_bytes()
    dose.write_bytes(blob[: len(blob) // 2])  # SimpleITK alone reads this back with missing slices
    with pytest.raises(InputError, match="damaged or truncated NIfTI"):
        nifti.read_case(out)
    (out / "case.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        nifti.read_case(out)


def test_short_nifti_write_is_an_error(tmp_path, case, monkeypatch):
    """A full disk: SimpleITK prints an error and returns; the write must fail and leave nothing."""
    real = nifti.sitk.WriteImage

    def short_write(image, path, useCompression=True):
        real(image, path, useCompression=useCompression)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
    monkeypatch.setattr(nifti.sitk, "WriteImage", short_write)
    out = tmp_path / "out" / "anon"
    with pytest.raises(OSError, match="incomplete right after writing"):
        ingest_case(case, "anon", DATASET, out)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def _file_size_limit(n_bytes: int):
    """A full disk as the kernel gives it: writes past n_bytes fail (EFBIG) instead of SIGXFSZ."""
    import resource
    import signal

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return apply


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as a full disk: Linux")
def test_full_disk_gives_a_clean_error_and_no_file(case, tmp_path):
    """Defect 5: on a full disk ingest wrote a 0-byte ct.nii.gz (exit 0) and preprocess crashed
    in HDF5 (SIGSEGV, a temporary left); now both exit 2 naming the file, and nothing is left."""
    settings = tmp_path / "s.yaml"
    settings.write_text(yaml.safe_dump({"dataset": {**DATASET.__dict__, "name": "site", "source": "dicom"},
                                        "preprocess": {"size": [16, 16]}}))
    nifti_dir, h5 = tmp_path / "nifti" / "anon", tmp_path / "h5" / "anon.h5"
    full = _cli("ingest", "--settings", str(settings), "--case", "anon", "--input", str(case), "--out",
                str(nifti_dir), limit=_file_size_limit(3000))
    assert full.returncode == 2 and "ct.nii.gz" in full.stderr and "Traceback" not in full.stderr, full.stderr
    assert list(nifti_dir.parent.iterdir()) == []
    ingest_case(case, "anon", DATASET, nifti_dir)
    full = _cli("preprocess", "--settings", str(settings), "--input", str(nifti_dir), "--out", str(h5),
                limit=_file_size_limit(20000))
    assert full.returncode == 2 and "anon.h5: File too large" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr and list(h5.parent.iterdir()) == []


def test_truncated_h5_is_an_error(tmp_path):
    path = tmp_path / "c.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(InputError, match="not a readable HDF5"):
        read_case_h5(path)


def test_pixel_data_longer_than_header_says(case):
    _edit(_ct(case), lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\0" * 2 * (int(ds.Columns) - 1) * int(ds.Rows)))
    _error(case, "PixelData of", "CT.4.dcm")  # pydicom alone trims it and the CT comes out sheared


def test_bytes_inserted_into_pixel_data(case):
    _edit(_ct(case), lambda ds: setattr(ds, "PixelData", ds.PixelData[:-62] + b"\1\2\3" + ds.PixelData[-62:]))
    _error(case, "PixelData of", "CT.4.dcm")


@pytest.mark.parametrize("text, fragment", [("nan", "RescaleSlope = nan"), ("0", "RescaleSlope = 0"),
                                            ("abc", "RescaleSlope = 'abc'"), ("1\\2", "RescaleSlope holds 2 values")])
def test_bad_rescale_slope(case, text, fragment):
    _edit(_ct(case), lambda ds: _raw(ds, "RescaleSlope", text))
    _error(case, fragment, "CT.4.dcm")


def test_dose_grid_outside_the_ct(case):
    rd = case / "RD.dcm"
    _edit(rd, lambda ds: setattr(ds, "ImagePositionPatient", ["10000", "10000", "10000"]))
    _error(case, "0.0% of the high-dose region lies on the CT grid", "RD.dcm")


def test_partial_dose_overlap_is_warned(src, tmp_path, caplog):
    folder = tmp_path / "c"
    shutil.copytree(src, folder)
    _edit(folder / "RD.dcm", lambda ds: setattr(
        ds, "ImagePositionPatient", [str(float(ds.ImagePositionPatient[0]) + 60), *ds.ImagePositionPatient[1:]]))
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        read_dicom_case(folder, "anon", DATASET)
    assert any("outside the CT grid" in r.getMessage() and "%" in r.getMessage() for r in caplog.records)


def test_absurd_dose_grid_scaling(case):
    _edit(case / "RD.dcm", lambda ds: _raw(ds, "DoseGridScaling", "1e30"))
    _error(case, "DoseGridScaling 1e+30", "RD.dcm")


def test_dropped_contours_and_ignored_series_are_counted(src, tmp_path, caplog):
    folder = tmp_path / "c"
    shutil.copytree(src, folder)

    def damage(ds):
        contours = [c for r in ds.ROIContourSequence for c in r.get("ContourSequence", [])]
        contours[0].ContourData = contours[0].ContourData[:6]  # 2 points
        contours[1].ContourData = [float("nan")] * 9
    _edit(folder / "RS.dcm", damage)
    _edit(_ct(folder, 0), lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.3.4"))  # a damaged UID
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        case = read_dicom_case(folder, "anon", DATASET)  # the end slice is left out, with a warning
    assert case.ct.shape[0] == SMALL.shape[0] - 1
    texts = " ".join(r.getMessage() for r in caplog.records)
    assert "dropped" in texts and "other CT series (1 slices" in texts, texts


def test_un_encoded_long_contour_is_decoded(src, tmp_path):
    """ContourData over 64 KB is stored as UN in explicit VR files; it must be read, not crash."""
    folder = tmp_path / "c"
    shutil.copytree(src, folder)
    reference = read_dicom_case(folder, "anon", DATASET)

    def as_un(ds):
        for roi in ds.ROIContourSequence:
            for c in roi.get("ContourSequence", []):
                pts = np.asarray(c.ContourData, float).reshape(-1, 3)
                dense = np.repeat(pts, max(1, 6000 // len(pts)), axis=0)  # same polygon, > 64 KB of text
                text = "\\".join(f"{v:.4f}" for v in dense.ravel()).encode()
                text += b" " if len(text) % 2 else b""
                c._dict[pydicom.tag.Tag(0x30060050)] = RawDataElement(
                    pydicom.tag.Tag(0x30060050), "UN", len(text), text, 0, False, True)
    _edit(folder / "RS.dcm", as_un)
    case = read_dicom_case(folder, "anon", DATASET)
    for name, mask in reference.masks.items():
        assert np.array_equal(case.masks[name], mask), name


def test_openkbp_silent_wrong_values(tmp_path):
    from test_fuzz_ingest import _openkbp_patient
    from dosediff.io.openkbp import read_openkbp_case
    ds = DatasetConfig(name="k", source="openkbp", rois=["PTV70", "Larynx"])
    rng = np.random.default_rng(0)
    for k, (edit, fragment) in enumerate([(lambda f: shutil.copy(f / "PTV70.csv", f / "ptv70.csv"), "second file"),
                                          (lambda f: _append(f / "dose.csv", "7,inf\n"), "value inf"),
                                          (lambda f: _append(f / "dose.csv", "7,1e40\n"), "1e+40"),
                                          (lambda f: _append(f / "dose.csv", "7,-2\n"), "-2")]):
        folder = tmp_path / f"pt_{k}"
        _openkbp_patient(folder, rng)
        edit(folder)
        with pytest.raises(InputError, match=fragment.replace("+", r"\+")):
            read_openkbp_case(folder, "pt", ds)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


# --- 7: raw tracebacks ----------------------------------------------------------------------

@pytest.mark.parametrize("keyword, text", [("GantryDetectorTilt", "x"), ("PixelSpacing", "0\\0"),
                                           ("PixelSpacing", "-1\\1"), ("ImageOrientationPatient", "a\\b"),
                                           ("SliceThickness", "1\\2")])
def test_bad_numeric_tags_name_tag_and_file(case, keyword, text):
    for p in case.rglob("CT.*.dcm"):
        _edit(p, lambda ds: _raw(ds, keyword, text))
    msg = _error(case, "CT.", "Fix:") if keyword != "SliceThickness" else None
    assert msg is None or keyword in msg or "element" in msg, msg


def test_messages_show_plain_numbers_not_numpy_reprs(case):
    """Defect 8: a value parsed into numpy reached the message as `np.float64(2.0)`."""
    for p in case.rglob("CT.*.dcm"):
        _edit(p, lambda ds: _raw(ds, "ImageOrientationPatient", "1\\0\\0\\0\\2\\0"))
    msg = _error(case, "ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0]", "CT.")
    assert "np." not in msg, msg
    from dosediff.metrics.evaluate import evaluate_case
    dose = np.zeros((4, 4, 4), np.float32)
    with pytest.raises(InputError, match=r"value \[0.0, 1.0, 1.0\]") as err:
        evaluate_case(dose, dose, {}, np.array([0.0, 1.0, 1.0]), None, 60.0)
    assert "np." not in str(err.value)


def test_huge_rows_columns_are_refused_before_allocation(case):
    for p in case.rglob("CT.*.dcm"):
        _edit(p, lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)))
    _error(case, "Rows = 65535")
    _edit(_ct(case), lambda ds: delattr(ds, "Rows"))
    _error(case)


def test_damaged_informational_prescription_only_warns(case, caplog):
    """Defect 7: a non-numeric RTPLAN TargetPrescriptionDose (informational) stopped the case."""
    def damage(ds):
        tag = pydicom.tag.Tag(0x300A0026)
        ds.DoseReferenceSequence[0]._dict[tag] = RawDataElement(tag, "DS", 4, b"abc ", 0, False, True)
    _edit(case / "RP.dcm", damage)
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        read_dicom_case(case, "anon", DATASET)
    assert any("TargetPrescriptionDose = 'abc'" in r.getMessage() for r in caplog.records)


def test_deeply_nested_folders_are_an_error(case, tmp_path):
    """Defect 7: 1,100 nested folders raised RecursionError from the folder walk."""
    deep = [str(case) + "/d" * i for i in range(1, 1101)]  # plain strings: pathlib recurses on them too
    for d in deep:
        os.mkdir(d)
    try:
        with pytest.raises(InputError, match="nested too deep"):
            ingest_case(case, "anon", DATASET, tmp_path / "out" / "anon")
    finally:
        for d in reversed(deep):  # shutil.rmtree would recurse as deep
            os.rmdir(d)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_preprocess_size_is_bounded():
    with pytest.raises(InputError, match="preprocess.size"):
        PreprocessConfig(size=[100000, 100000])


def _cli(*args: str, limit=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([sys.executable, "-m", "dosediff", *args], capture_output=True, text=True, env=env,
                          timeout=120, preexec_fn=limit)


def test_cli_gives_one_clean_message_and_no_identity(case, tmp_path):
    """Defects 6 and 7 through the command: a damaged header value gives one message, exit 2,
    no traceback, the file named relative to the case, and nothing from the headers."""
    _edit(_ct(case), lambda ds: _raw(ds, "RescaleIntercept", "garbage"))
    settings = tmp_path / "s.yaml"
    settings.write_text(yaml.safe_dump({"dataset": {**DATASET.__dict__, "name": "site", "source": "dicom"}}))
    out = _cli("ingest", "--settings", str(settings), "--case", "anon", "--input", str(case),
               "--out", str(tmp_path / "out" / "anon"))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "<anon>/CT/CT.4.dcm" in out.stderr, out.stderr
    assert "MRN12345" not in out.stderr and str(tmp_path) not in out.stderr.replace(str(tmp_path / "out"), "")
    assert not any(s in out.stderr for s in SENTINELS), out.stderr


def test_ct_without_frame_of_reference_is_blamed_on_the_ct(case):
    """Defect 8: the message names the CT, not the RTSTRUCT with an empty expected UID."""
    for p in case.rglob("CT.*.dcm"):
        _edit(p, lambda ds: delattr(ds, "FrameOfReferenceUID"))
    _error(case, "no FrameOfReferenceUID in the CT", "CT.")


def test_atomic_outputs_get_the_usual_mode(tmp_path):
    """Defect 9: a file written through mkstemp (0600) is made 0644-like before the rename."""
    import tempfile

    from dosediff.atomic import atomic_file
    target = tmp_path / "model.safetensors"
    with atomic_file(target) as tmp:
        fd, name = tempfile.mkstemp(dir=tmp_path)
        os.close(fd)
        os.replace(name, tmp)
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask

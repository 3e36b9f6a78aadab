"""Issue 9: seeded fuzz of ingest over the probe families of the hostile-input sweep.

Each mutation edits a copy of a small phantom DICOM-RT patient (300: header tags as damaged
text or bytes or deleted; cut, flipped or inserted bytes; removed, duplicated or foreign
files; damaged contours; a moved dose grid), of six real IBSI CT slices with their RTSTRUCT
(30, skipped without the sample data) or of a small OpenKBP patient (60, malformed CSVs),
and ingest must then either succeed with output its own reader accepts, or raise an
InputError naming the case's file; never another exception, never a hang, never a partial
output, never a sentinel patient field or a numpy repr in a message. Mutations of the
"silent wrong data" families must produce an error or a warning naming the value.
"""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement

from dosediff.config import DatasetConfig, PhantomConfig
from dosediff.errors import InputError
from dosediff.ingest import ingest_case, read_source_case
from dosediff.io.nifti import read_case
from dosediff.phantom import SENTINELS, phantom_dataset_config, write_phantom_case

SEED = 9
N_DICOM, N_OPENKBP = 300, 60
TIMEOUT_S = 20
SMALL = PhantomConfig(n_cases=1, shape=[12, 32, 32], spacing=[6.0, 5.0, 5.0], n_beams=3)
TAGS = {
    "CT": ["RescaleSlope", "RescaleIntercept", "GantryDetectorTilt", "PixelSpacing", "ImageOrientationPatient",
           "ImagePositionPatient", "SliceThickness", "FrameOfReferenceUID", "SeriesInstanceUID", "Modality"],
    "RD": ["DoseGridScaling", "PixelSpacing", "ImagePositionPatient", "GridFrameOffsetVector", "SliceThickness",
           "ImageOrientationPatient", "DoseUnits", "FrameOfReferenceUID"],
    "RS": ["FrameOfReferenceUID", "Modality"],
    "RP": ["SOPInstanceUID"],
}
VALUES = ["abc", "1\\2\\3", "0", "-1", "nan", "inf", "1e30", "", None, b"\xff\xfe\x00\x01"]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _edit(path: Path, fn) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def _set_raw(ds: pydicom.Dataset, keyword: str, value) -> None:
    """Store `value` as raw bytes under the tag's own VR, as a damaged file would hold it
    (pydicom would refuse to encode it)."""
    tag = pydicom.tag.Tag(pydicom.datadict.tag_for_keyword(keyword))
    if value is None:
        if keyword in ds:
            del ds[keyword]
        return
    raw = value if isinstance(value, bytes) else value.encode()
    raw += b" " if len(raw) % 2 else b""
    ds._dict[tag] = RawDataElement(tag, pydicom.datadict.dictionary_VR(tag), len(raw), raw, 0, False, True)


def _first_contour(ds: pydicom.Dataset, rng: np.random.Generator) -> pydicom.Dataset:
    rois = [r for r in ds.ROIContourSequence if r.get("ContourSequence")]
    roi = rois[int(rng.integers(len(rois)))]
    return roi.ContourSequence[int(rng.integers(len(roi.ContourSequence)))]


def _tag(folder: Path, pick: dict, rng: np.random.Generator) -> None:
    """A header tag as damaged text, bytes or deleted."""
    kind = ["CT", "CT", "RD", "RD", "RS", "RP"][int(rng.integers(6))]
    keyword = TAGS[kind][int(rng.integers(len(TAGS[kind])))]
    value = VALUES[int(rng.integers(len(VALUES)))]
    _edit(pick[kind], lambda ds: _set_raw(ds, keyword, value))


def _bytes(folder: Path, pick: dict, rng: np.random.Generator) -> None:
    """Bytes cut, flipped, inserted or appended."""
    path = list(pick.values())[int(rng.integers(4))]
    blob = bytearray(path.read_bytes())
    op, at = int(rng.integers(4)), int(rng.integers(132, len(blob)))
    if op == 0:
        blob = blob[:at]
    elif op == 1:
        for i in rng.integers(132, len(blob), size=int(rng.integers(1, 8))):
            blob[int(i)] ^= 0xFF
    elif op == 2:
        blob[len(blob) - int(rng.integers(1, 400)):0] = bytes(rng.integers(0, 256, int(rng.integers(1, 4))).tolist())
    else:
        blob += bytes(rng.integers(0, 256, int(rng.integers(1, 64))).tolist())
    path.write_bytes(bytes(blob))


def _files(folder: Path, pick: dict, rng: np.random.Generator, cts: list[Path]) -> None:
    """Files removed, duplicated, foreign or nested."""
    op = int(rng.integers(7))
    if op == 0:
        cts[int(rng.integers(1, len(cts) - 1))].unlink()
    elif op == 1:
        shutil.copy(pick["CT"], folder / "CT.copy.dcm")
    elif op == 2:
        (folder / "notes.txt").write_text("exported by hand\n")
    elif op == 3:
        _edit(pick["CT"], lambda ds: setattr(ds, "SeriesInstanceUID", "1.2.3.4.5.6"))
    elif op == 4:
        (folder / ["RS.dcm", "RD.dcm", "RP.dcm"][int(rng.integers(3))]).unlink()
    elif op == 5:
        deep = folder.joinpath(*["d"] * int(rng.choice([3, 40])))
        deep.mkdir(parents=True)
        shutil.copy(pick["CT"], deep / "x.dcm")
    else:
        for p in cts:
            p.unlink()


def _contour(folder: Path, pick: dict, rng: np.random.Generator) -> str | None:
    """A contour with NaN, inf, too few points, none, or > 64 KB stored as UN."""
    op = int(rng.integers(5))

    def edit(ds: pydicom.Dataset) -> None:
        c = _first_contour(ds, rng)
        pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
        if op < 4:
            if op == 0:
                pts[0, 0] = np.nan
            elif op == 1:
                pts[-1, 1] = np.inf
            pts = pts[:2] if op == 2 else pts[:0] if op == 3 else pts
            c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
            c.NumberOfContourPoints = len(pts)
            return
        t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)  # explicit VR files store this as UN
        ring = np.column_stack([pts[:, 0].mean() + 5 * np.cos(t), pts[:, 1].mean() + 5 * np.sin(t),
                                np.full_like(t, pts[0, 2])])
        text = "\\".join(f"{v:.4f}" for v in ring.ravel()).encode()
        c[0x30060050] = DataElement(0x30060050, "UN", text + (b" " if len(text) % 2 else b""))
        c.NumberOfContourPoints = len(ring)

    _edit(pick["RS"], edit)
    return "dropped" if op < 4 else None


def _silent_wrong(folder: Path, pick: dict, rng: np.random.Generator) -> str:
    """The silent-wrong dose and rescale values of the sweep; returns what must be reported."""
    edits = [
        ("RD", lambda ds: setattr(ds, "ImagePositionPatient", ["10000", "10000", "10000"]), "CT grid"),
        ("RD", lambda ds: setattr(ds, "ImagePositionPatient",
                                  [str(float(ds.ImagePositionPatient[0]) + 60), *ds.ImagePositionPatient[1:]]),
         "outside the CT grid"),
        ("RD", lambda ds: _set_raw(ds, "DoseGridScaling", "1e30"), "DoseGridScaling"),
        ("CT", lambda ds: _set_raw(ds, "RescaleSlope", "nan"), "RescaleSlope"),
        ("CT", lambda ds: _set_raw(ds, "RescaleSlope", "0"), "RescaleSlope"),
        ("CT", lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\0" * 2 * int(ds.Rows) * (int(ds.Columns) - 1)),
         "PixelData of"),
    ]
    kind, fn, fragment = edits[int(rng.integers(len(edits)))]
    _edit(pick[kind], fn)
    return fragment


def _sizes(cts: list[Path], pick: dict, rng: np.random.Generator) -> None:
    """Image sizes that would allocate far too much, disagree between slices, or are missing."""
    op = int(rng.integers(3))
    for p in cts if op == 0 else [pick["CT"]]:
        _edit(p, lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)) if op < 2
              else _set_raw(ds, "BitsAllocated", None))


def dicom_mutation(folder: Path, k: int, rng: np.random.Generator) -> str | None:
    """Apply mutation k (family k % 6) to the patient folder; return the fragment a warning or
    error must hold for the silent-wrong families (None: any clean outcome)."""
    cts = sorted(folder.rglob("CT.*.dcm"), key=lambda p: int(p.name.split(".")[1]))
    pick = {"CT": cts[int(rng.integers(len(cts)))], "RD": folder / "RD.dcm", "RS": folder / "RS.dcm",
            "RP": folder / "RP.dcm"}
    family = k % 6
    if family == 0:
        return _tag(folder, pick, rng)
    if family == 1:
        return _bytes(folder, pick, rng)
    if family == 2:
        return _files(folder, pick, rng, cts)
    if family == 3:
        return _contour(folder, pick, rng)
    if family == 4:
        return _silent_wrong(folder, pick, rng)
    return _sizes(cts, pick, rng)


def _check_outcome(folder: Path, out: Path, run, fragment: str | None, what: str) -> str | None:
    """Run one ingest; return a failure description, or None when the outcome is clean."""
    records = Records()
    logger = logging.getLogger("dosediff")
    logger.addHandler(records)
    signal.alarm(TIMEOUT_S)
    error = None
    try:
        run()
    except InputError as err:
        error = str(err)
    except Exception as err:  # the defect this test exists to catch
        return f"{what}: raw {type(err).__name__}: {str(err)[:200]}"
    finally:
        signal.alarm(0)
        logger.removeHandler(records)
    texts = records.messages + ([error] if error else [])
    if any(s in t for s in SENTINELS for t in texts):
        return f"{what}: a patient field reached a message"
    if any("np." in t for t in texts):  # numbers in messages print plain, not as np.float64(...)
        return f"{what}: a numpy repr in a message: {[t for t in texts if 'np.' in t][0][:200]}"
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".")] if out.parent.exists() else []
    if leftovers:
        return f"{what}: temporaries left: {leftovers}"
    if error is not None:
        if out.exists():
            return f"{what}: output left after an error"
        if "case fz" not in error or ("<fz>" not in error and "setting" not in error):
            return f"{what}: error does not name the case's file: {error[:200]}"
    if fragment is not None and not any(fragment in t for t in texts):
        return f"{what}: silent: no error or warning with {fragment!r}"
    return None


def _timeout(signum, frame):
    raise TimeoutError("ingest hung")


@pytest.fixture(scope="module")
def phantom_src(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("fuzz_src") / "src"
    write_phantom_case(src, "fz", 1, SMALL)
    return src


def test_fuzz_dicom_ingest(phantom_src, tmp_path):
    old = signal.signal(signal.SIGALRM, _timeout)
    rng = np.random.default_rng(SEED)
    dataset = phantom_dataset_config()
    failures, outcomes = [], {"ok": 0, "error": 0}
    try:
        for k in range(N_DICOM):
            folder, out = tmp_path / f"m{k}" / "fz", tmp_path / f"o{k}" / "fz"
            shutil.copytree(phantom_src, folder)
            fragment = dicom_mutation(folder, k, rng)

            def run():
                ingest_case(folder, "fz", dataset, out)
                read_case(out)  # the reader's own validation of what was written
            failure = _check_outcome(folder, out, run, fragment, f"mutation {k} (family {k % 6})")
            if failure:
                failures.append(failure)
            outcomes["ok" if out.exists() else "error"] += 1
            shutil.rmtree(folder.parent, ignore_errors=True)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not failures, f"{len(failures)} of {N_DICOM} mutations:\n" + "\n".join(failures)
    assert outcomes["ok"] > 20 and outcomes["error"] > 100, outcomes  # both outcomes are exercised


def _openkbp_patient(folder: Path, rng: np.random.Generator) -> None:
    """A small sparse OpenKBP patient: CT, dose, possible-dose mask, two ROIs, voxel sizes."""
    folder.mkdir(parents=True)
    index = np.sort(rng.choice(128 ** 3, size=3000, replace=False))
    lines = lambda vals: ",data\n" + "".join(f"{i},{v}\n" for i, v in zip(index, vals))  # noqa: E731
    (folder / "ct.csv").write_text(lines(rng.integers(1, 2000, index.size)))
    (folder / "dose.csv").write_text(lines(np.round(rng.uniform(0, 70, index.size), 3)))
    for name in ("possible_dose_mask", "PTV70", "Larynx"):
        (folder / f"{name}.csv").write_text(lines([""] * index.size))
    (folder / "voxel_dimensions.csv").write_text("3.906\n3.906\n2.5\n")


def openkbp_mutation(folder: Path, k: int) -> str | None:
    """Mutation k of the malformed-CSV family; the fragment a silent-wrong one must raise or warn."""
    dose, ct = folder / "dose.csv", folder / "ct.csv"
    first = dose.read_text().splitlines()[1].split(",")[0]
    edits = [
        (dose, lambda t: t.replace(",data", "idx,val", 1), None),
        (dose, lambda t: t + "12,abc\n", None),
        (dose, lambda t: t + "12,inf\n", "inf"),
        (dose, lambda t: t + "12,-inf\n", "inf"),
        (dose, lambda t: t + "12,1e40\n", "1e+40"),
        (dose, lambda t: t + "12,-3.5\n", "-3.5"),
        (dose, lambda t: t + f"{first},1.0\n", f"flat index {first}"),
        (dose, lambda t: t + f"{2 ** 70},1.0\n", None),
        (dose, lambda t: t + "-1,1.0\n", None),
        (dose, lambda t: t + f"{128 ** 3},1.0\n", None),
        (ct, lambda t: t + "5,1,2\n", None),
        (ct, lambda t: "", None),
        (folder / "voxel_dimensions.csv", lambda t: "1e-300\n1e-300\n1e-300\n", None),
        (folder / "voxel_dimensions.csv", lambda t: "0\n3\n3\n", None),
        (folder / "voxel_dimensions.csv", lambda t: "abc\n", None),
        (folder / "voxel_dimensions.csv", lambda t: "3.9\n3.9\n", None),
    ]
    n = len(edits)
    if k % (n + 5) < n:
        path, fn, fragment = edits[k % (n + 5)]
        path.write_text(fn(path.read_text()))
        return fragment
    op = k % (n + 5) - n
    if op == 0:  # a folder named like a ROI file
        (folder / "Larynx.csv").unlink()
        (folder / "Larynx.csv").mkdir()
    elif op == 1:  # a symlink loop
        (folder / "Mandible.csv").symlink_to(folder / "Mandible.csv")
    elif op == 2:  # a stray lower-case copy that would replace the ROI
        shutil.copy(folder / "PTV70.csv", folder / "ptv70.csv")
        return "a second file for ROI PTV70"
    elif op == 3:  # a cut xz file
        import lzma
        blob = lzma.compress(ct.read_bytes())
        ct.unlink()
        (folder / "ct.csv.xz").write_bytes(blob[: len(blob) // 2])
    else:
        (folder / "voxel_dimensions.csv").unlink()
    return None


def test_fuzz_openkbp_reader(tmp_path):
    old = signal.signal(signal.SIGALRM, _timeout)
    rng = np.random.default_rng(SEED)
    dataset = DatasetConfig(name="openkbp", source="openkbp", rois=["PTV70", "Larynx", "Mandible"],
                            targets={"PTV70": 70.0}, prescription_gy=70.0)
    failures = []
    try:
        for k in range(N_OPENKBP):
            folder = tmp_path / f"m{k}" / "fz"
            _openkbp_patient(folder, rng)
            fragment = openkbp_mutation(folder, k)
            out = tmp_path / f"o{k}" / "fz"

            def run():
                case = read_source_case(folder, "fz", dataset)
                assert np.isfinite(case.dose).all() and case.dose.min() >= 0  # what the reader promises
                out.mkdir(parents=True)
            failure = _check_outcome(folder, out, run, fragment, f"OpenKBP mutation {k}")
            if failure:
                failures.append(failure)
            shutil.rmtree(folder.parent, ignore_errors=True)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not failures, f"{len(failures)} of {N_OPENKBP} mutations:\n" + "\n".join(failures)


N_IBSI = 30
IBSI_SLICES = slice(20, 26)  # contiguous slices through the GTV of STS_019


def ibsi_mutation(folder: Path, k: int, rng: np.random.Generator) -> str | None:
    """Tag, byte and contour mutations of a real CT series + RTSTRUCT (no dose)."""
    cts = sorted(folder.rglob("CT.*.dcm"), key=lambda p: int(p.name.split(".")[1]))
    pick = {"CT": cts[int(rng.integers(len(cts)))], "RS": folder / "RS.dcm"}
    family = k % 3
    if family == 0:
        kind = ["CT", "CT", "RS"][int(rng.integers(3))]
        keyword = TAGS[kind][int(rng.integers(len(TAGS[kind])))]
        value = VALUES[int(rng.integers(len(VALUES)))]
        _edit(pick[kind], lambda ds: _set_raw(ds, keyword, value))
        return None
    if family == 1:
        return _bytes(folder, {**pick, "CT2": cts[0], "RS2": pick["RS"]}, rng)
    return _contour(folder, pick, rng)


@pytest.fixture(scope="module")
def ibsi_src(ibsi_dir: Path, tmp_path_factory) -> Path:
    root = ibsi_dir / "STS_019" / "dicom"
    files = sorted((root / "image").glob("*.dcm"),
                   key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    src = tmp_path_factory.mktemp("fuzz_ibsi") / "src"
    (src / "CT").mkdir(parents=True)
    for k, f in enumerate(files[IBSI_SLICES]):
        shutil.copy(f, src / "CT" / f"CT.{k}.dcm")
    shutil.copy(root / "mask" / "RS.dcm", src / "RS.dcm")
    return src


def test_fuzz_ibsi_ingest(ibsi_src, tmp_path):
    old = signal.signal(signal.SIGALRM, _timeout)
    rng = np.random.default_rng(SEED)
    dataset = DatasetConfig(name="ibsi", source="dicom", rois=["GTV_Mass"], aliases={"GTV_Mass": ["GTV_Mass_CT"]})
    failures = []
    try:
        for k in range(N_IBSI):
            folder, out = tmp_path / f"m{k}" / "fz", tmp_path / f"o{k}" / "fz"
            shutil.copytree(ibsi_src, folder)
            fragment = ibsi_mutation(folder, k, rng)

            def run():
                ingest_case(folder, "fz", dataset, out, require_dose=False)
                read_case(out)
            failure = _check_outcome(folder, out, run, fragment, f"IBSI mutation {k} (family {k % 3})")
            if failure:
                failures.append(failure)
            shutil.rmtree(folder.parent, ignore_errors=True)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not failures, f"{len(failures)} of {N_IBSI} mutations:\n" + "\n".join(failures)

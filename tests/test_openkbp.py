"""OpenKBP reader against the raw CSVs, parsed independently here with plain pandas."""

from __future__ import annotations

import logging
import lzma
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dosediff.config import DatasetConfig, PreprocessConfig
from dosediff.data.h5 import read_case_h5
from dosediff.errors import InputError
from dosediff.io.openkbp import read_openkbp_case, to_openkbp_array, write_openkbp_dose_csv
from dosediff.preprocess.pipeline import preprocess_case

ROIS = ["PTV70", "PTV63", "PTV56", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx",
        "Mandible"]
PATIENTS = ["train-pats/pt_1", "train-pats/pt_10", "validation-pats/pt_201"]


def _dataset(input_dir: Path, **kw) -> DatasetConfig:
    return DatasetConfig(name="openkbp", source="openkbp", input_dir=str(input_dir), rois=ROIS,
                         targets={"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}, prescription_gy=70.0,
                         lr_pairs=[["LeftParotid", "RightParotid"]], **kw)


def _raw(path: Path, fill: float = 0.0) -> np.ndarray:
    """Independent reading: pandas (reads .xz itself), np.put into 128^3 C order, then the
    documented transpose (2, 0, 1) to (z, y, x)."""
    df = pd.read_csv(path, index_col=0)
    arr = np.full((128, 128, 128), fill, dtype=np.float64)
    values = df["data"].to_numpy() if df["data"].notna().any() else 1.0
    np.put(arr, df.index.to_numpy(), values)
    return arr.transpose(2, 0, 1)


@pytest.mark.parametrize("patient", PATIENTS)
def test_case_equals_raw_csv(openkbp_dir, patient):
    folder = openkbp_dir / patient
    case = read_openkbp_case(folder, folder.name, _dataset(openkbp_dir))
    raw_ct = _raw(folder / "ct.csv.xz")
    np.testing.assert_array_equal(case.ct, np.where(raw_ct == 0, -1024, raw_ct - 1024))  # air omitted = 0
    assert case.ct.dtype == np.int16
    np.testing.assert_array_equal(case.dose, _raw(folder / "dose.csv.xz").astype(np.float32))
    assert case.dose.dtype == np.float32
    np.testing.assert_array_equal(case.possible_dose, _raw(folder / "possible_dose_mask.csv.xz"))
    files = {p.name.split(".")[0] for p in folder.iterdir()}
    assert list(case.masks) == [r for r in ROIS if r in files]
    for name, mask in case.masks.items():
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, _raw(folder / f"{name}.csv.xz"))
    dims = np.loadtxt(lzma.open(folder / "voxel_dimensions.csv.xz"))
    assert case.geometry.spacing == pytest.approx((dims[2], dims[0], dims[1]))
    assert case.geometry.direction == (1, 0, 0, 0, 1, 0, 0, 0, -1) and case.geometry.origin == (0, 0, 0)
    assert case.meta == {"source": "openkbp"} and case.prescription_gy == 70.0


def test_preprocessed_h5_equals_raw(openkbp_dir, tmp_path):
    folder = openkbp_dir / "train-pats" / "pt_1"
    dataset = _dataset(openkbp_dir)
    case = read_openkbp_case(folder, "pt_1", dataset)
    cfg = PreprocessConfig(crop_to_body=False, size=[128, 128], representations=["psdm"])
    preprocess_case(case, dataset, cfg, tmp_path / "pt_1.h5")
    arrays, attrs = read_case_h5(tmp_path / "pt_1.h5")
    raw_ct = _raw(folder / "ct.csv.xz")
    np.testing.assert_array_equal(arrays["ct"], np.where(raw_ct == 0, -1024, raw_ct - 1024))
    np.testing.assert_array_equal(arrays["dose"], _raw(folder / "dose.csv.xz").astype(np.float32))
    np.testing.assert_array_equal(arrays["possible_dose"], _raw(folder / "possible_dose_mask.csv.xz"))
    for k, name in enumerate(ROIS):
        path = folder / f"{name}.csv.xz"
        expected = _raw(path) if path.exists() else np.zeros((128, 128, 128))
        np.testing.assert_array_equal(arrays["masks"][k], expected)
    assert attrs["crop_box"] == [0, 128, 0, 128, 0, 128] and attrs["spacing"] == list(case.geometry.spacing)
    assert attrs["rois_present"] == list(case.masks)


def test_plain_csv_reads_the_same(openkbp_dir, tmp_path):
    src = openkbp_dir / "validation-pats" / "pt_201"
    plain = tmp_path / "pt_201"
    plain.mkdir()
    for path in src.iterdir():
        (plain / path.name[:-3]).write_bytes(lzma.decompress(path.read_bytes()))
    assert not list(plain.glob("*.xz"))
    a = read_openkbp_case(src, "pt_201", _dataset(openkbp_dir))
    b = read_openkbp_case(plain, "pt_201", _dataset(tmp_path))
    for name in ("ct", "dose", "possible_dose"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert list(a.masks) == list(b.masks)
    assert a.geometry == b.geometry


def _copy_without(src: Path, dst: Path, skip: str) -> Path:
    shutil.copytree(src, dst, ignore=lambda _d, names: [n for n in names if n.startswith(skip)])
    return dst


def test_missing_dose(openkbp_dir, tmp_path):
    folder = _copy_without(openkbp_dir / "train-pats" / "pt_1", tmp_path / "pt_1", "dose")
    out = tmp_path / "out" / "pt_1.h5"
    with pytest.raises(InputError) as err:
        case = read_openkbp_case(folder, "pt_1", _dataset(openkbp_dir))
        preprocess_case(case, _dataset(openkbp_dir), PreprocessConfig(), out)
    message = str(err.value)
    assert "case pt_1" in message and "dose.csv" in message and "Fix:" in message
    assert not out.exists()
    # a new patient without a planned dose is fine when no dose is required
    case = read_openkbp_case(folder, "pt_1", _dataset(openkbp_dir), require_dose=False)
    assert case.dose is None and case.ct.shape == (128, 128, 128)


def test_missing_voxel_dimensions(openkbp_dir, tmp_path):
    folder = _copy_without(openkbp_dir / "train-pats" / "pt_1", tmp_path / "pt_1", "voxel_dimensions")
    with pytest.raises(InputError, match=r"case pt_1: .*voxel_dimensions\.csv.*Fix: copy voxel_dimensions"):
        read_openkbp_case(folder, "pt_1", _dataset(openkbp_dir))


def _tiny_folder(tmp_path: Path, ct_text: str, extra: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "pt_9"
    folder.mkdir()
    (folder / "voxel_dimensions.csv").write_text("3.906\n3.906\n2.5\n")
    (folder / "ct.csv").write_text(ct_text)
    (folder / "dose.csv").write_text(",data\n5,1.5\n")
    for name, text in (extra or {}).items():
        (folder / name).write_text(text)
    return folder


def test_malformed_and_out_of_range(tmp_path):
    dataset = _dataset(tmp_path)
    folder = _tiny_folder(tmp_path, ",data\n12,1000.0\nabc,5\n")
    with pytest.raises(InputError, match=r"case pt_9: .*ct\.csv: malformed CSV"):
        read_openkbp_case(folder, "pt_9", dataset)
    (folder / "ct.csv").write_text(f",data\n{128**3},1000.0\n")
    with pytest.raises(InputError, match=r"ct\.csv: flat index 2097152 out of range"):
        read_openkbp_case(folder, "pt_9", dataset)
    (folder / "ct.csv").write_text(",data\n9,1\n3,2\n7,4\n9,5\n")  # unsorted, as the check must not assume
    with pytest.raises(InputError, match=r"ct\.csv: flat index 9 listed more than once"):
        read_openkbp_case(folder, "pt_9", dataset)
    (folder / "ct.csv").write_text("index,value\n1,2\n")
    with pytest.raises(InputError, match=r"ct\.csv: header"):
        read_openkbp_case(folder, "pt_9", dataset)
    (folder / "ct.csv").write_text(",data\n1,\n")
    with pytest.raises(InputError, match=r"ct\.csv: empty or non-numeric value on line 2"):
        read_openkbp_case(folder, "pt_9", dataset)
    (folder / "voxel_dimensions.csv").write_text("3.9\n3.9\n")
    with pytest.raises(InputError, match=r"voxel_dimensions\.csv: content"):
        read_openkbp_case(folder, "pt_9", dataset)


def test_ct_overflow_clipped_unknown_roi_warned(tmp_path, caplog):
    folder = _tiny_folder(tmp_path, ",data\n0,40000.0\n1,1064.0\n", {"Cochlea.csv": ",data\n3,\n", "PTV70.csv": ",data\n7,\n"})
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        case = read_openkbp_case(folder, "pt_9", _dataset(tmp_path))
    ct = to_openkbp_array(case.ct).ravel()
    assert ct[0] == 32767 and ct[1] == 40 and ct[2] == -1024
    assert to_openkbp_array(case.dose).ravel()[5] == np.float32(1.5)
    assert list(case.masks) == ["PTV70"] and to_openkbp_array(case.masks["PTV70"]).ravel()[7] == 1
    assert case.possible_dose is None
    text = caplog.text
    assert "ct.csv" in text and "clipped" in text and "pt_9" in text
    assert "Cochlea" in text and "skipped" in text


def test_alias_maps_to_canonical(tmp_path):
    folder = _tiny_folder(tmp_path, ",data\n0,1000.0\n", {"Cord.csv": ",data\n11,\n"})
    case = read_openkbp_case(folder, "pt_9", _dataset(tmp_path, aliases={"SpinalCord": ["Cord"]}))
    assert list(case.masks) == ["SpinalCord"]


def test_dose_csv_round_trip(openkbp_dir, tmp_path):
    folder = openkbp_dir / "train-pats" / "pt_10"
    case = read_openkbp_case(folder, "pt_10", _dataset(openkbp_dir))
    for name in ("dose.csv", "dose.csv.xz"):
        out = tmp_path / name
        write_openkbp_dose_csv(case.dose, out)
        np.testing.assert_array_equal(_raw(out).astype(np.float32), case.dose)
        text = lzma.decompress(out.read_bytes()) if name.endswith(".xz") else out.read_bytes()
        assert text.startswith(b",data\n")
    # the official file's nonzero voxels (it also lists some explicit zeros), with equal values
    official = pd.read_csv(folder / "dose.csv.xz", index_col=0)
    official = official[official["data"] != 0]
    mine = pd.read_csv(tmp_path / "dose.csv", index_col=0)
    np.testing.assert_array_equal(mine.index.to_numpy(), official.index.to_numpy())
    np.testing.assert_array_equal(mine["data"].to_numpy(np.float32), official["data"].to_numpy(np.float32))
    assert list(tmp_path.glob(".*tmp")) == []
    np.testing.assert_array_equal(to_openkbp_array(case.dose).transpose(2, 0, 1), case.dose)
    with pytest.raises(InputError, match="128, 128, 128"):
        to_openkbp_array(np.zeros((10, 128, 128)))

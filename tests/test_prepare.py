"""`dosediff prepare` (ingest and preprocess in one process) writes what `dosediff ingest`
then `dosediff preprocess` write: the same case folder and an HDF5 equal dataset by dataset
and attribute by attribute, on a DICOM-RT phantom and a real OpenKBP patient. A failure in
the preprocess half leaves neither output."""

from __future__ import annotations

import numpy as np
import pytest

from dosediff.cli import main
from dosediff.config import PhantomConfig, PreprocessConfig
from dosediff.data.h5 import read_case_h5
from dosediff.errors import InputError
from dosediff.ingest import ingest_case
from dosediff.io.nifti import read_case
from dosediff.phantom import phantom_dataset_config, write_phantom_case
from dosediff.prepare import prepare_case
from dosediff.preprocess.pipeline import preprocess_case

OPENKBP_SETTINGS = {
    "dataset": {"name": "openkbp", "source": "openkbp", "prescription_gy": 70.0,
                "rois": ["PTV70", "PTV63", "PTV56", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid",
                         "Esophagus", "Larynx", "Mandible"],
                "targets": {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}},
    "preprocess": {"size": [96, 96], "crop_to_body": True, "representations": ["psdm", "msdm"]},
}


def _assert_same_h5(a, b) -> None:
    arrays_a, attrs_a = read_case_h5(a)
    arrays_b, attrs_b = read_case_h5(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        assert arrays_a[name].dtype == arrays_b[name].dtype, name
        assert np.array_equal(arrays_a[name], arrays_b[name]), name
    assert attrs_a.keys() == attrs_b.keys()
    for key in attrs_a:
        assert np.array_equal(np.asarray(attrs_a[key]), np.asarray(attrs_b[key])), key


def _assert_same_case(a, b) -> None:
    case_a, case_b = read_case(a), read_case(b)
    assert case_a.geometry == case_b.geometry and case_a.meta == case_b.meta
    assert list(case_a.masks) == list(case_b.masks)
    for x, y in [(case_a.ct, case_b.ct), (case_a.dose, case_b.dose), *zip(case_a.masks.values(),
                                                                          case_b.masks.values())]:
        assert np.array_equal(x, y)


def test_phantom_prepare_equals_ingest_then_preprocess(tmp_path):
    source = tmp_path / "src" / "phantom_001"
    write_phantom_case(source, "phantom_001", 1, PhantomConfig(shape=[12, 40, 40], spacing=[5.0, 5.0, 5.0], n_beams=5))
    dataset, cfg = phantom_dataset_config(), PreprocessConfig(size=[32, 32], representations=["psdm", "tsbdm"])

    ingest_case(source, "phantom_001", dataset, tmp_path / "two" / "case")
    preprocess_case(read_case(tmp_path / "two" / "case"), dataset, cfg, tmp_path / "two" / "case.h5")
    prepare_case(source, "phantom_001", dataset, cfg, tmp_path / "one" / "case", tmp_path / "one" / "case.h5")

    _assert_same_case(tmp_path / "one" / "case", tmp_path / "two" / "case")
    _assert_same_h5(tmp_path / "one" / "case.h5", tmp_path / "two" / "case.h5")


def test_openkbp_prepare_command_equals_ingest_then_preprocess(openkbp_dir, tmp_path):
    import json

    settings = json.dumps(OPENKBP_SETTINGS)
    source = str(openkbp_dir / "train-pats" / "pt_1")
    two, one = tmp_path / "two", tmp_path / "one"
    assert main(["ingest", "--settings", settings, "--case", "pt_1", "--input", source, "--out", str(two / "pt_1")]) == 0
    assert main(["preprocess", "--settings", settings, "--input", str(two / "pt_1"), "--out", str(two / "pt_1.h5")]) == 0
    assert main(["prepare", "--settings", settings, "--case", "pt_1", "--input", source, "--out", str(one / "pt_1"),
                 "--h5", str(one / "pt_1.h5")]) == 0

    _assert_same_case(one / "pt_1", two / "pt_1")
    _assert_same_h5(one / "pt_1.h5", two / "pt_1.h5")


def test_failed_preprocess_half_leaves_no_case_folder(tmp_path):
    source = tmp_path / "src" / "phantom_002"
    write_phantom_case(source, "phantom_002", 2, PhantomConfig(shape=[12, 40, 40], spacing=[5.0, 5.0, 5.0], n_beams=5))
    cfg = PreprocessConfig(size=[32, 32], body_threshold_hu=5000.0)  # no voxel above: the preprocess half fails
    with pytest.raises(InputError, match="no voxel above 5000"):
        prepare_case(source, "phantom_002", phantom_dataset_config(), cfg, tmp_path / "out" / "case",
                     tmp_path / "out" / "case.h5")
    assert not [p.name for p in (tmp_path / "out").iterdir()]

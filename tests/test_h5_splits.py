"""HDF5 case files (round trip, chunking, attributes, atomic write) and the splits."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest

from dosediff.config import SplitConfig
from dosediff.data import h5 as h5mod
from dosediff.data.h5 import H5Case, read_case_h5, write_case_h5
from dosediff.data.splits import make_splits, write_splits
from dosediff.errors import InputError


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    K, Z, H, W = 3, 5, 12, 10
    masks = (rng.random((K, Z, H, W)) > 0.7).astype(np.uint8)
    return {
        "ct": rng.integers(-1024, 3000, (Z, H, W)).astype(np.int16),
        "dose": (rng.random((Z, H, W)) * 70).astype(np.float32),
        "body": (rng.random((Z, H, W)) > 0.3).astype(np.uint8),
        "masks": masks,
        "possible_dose": (rng.random((Z, H, W)) > 0.5).astype(np.uint8),
        "psdm": rng.normal(0, 1.5, (K, Z, H, W)).astype(np.float32),  # dm
        "msdm": rng.normal(0, 40, (K, Z, H, W)).astype(np.float32),  # voxels
        "tsbdm": rng.random((K, Z, H, W)).astype(np.float32),
    }


ATTRS = {"case_id": "pt_7", "roi_names": ["PTV70", "Brainstem", "Larynx"], "rois_present": ["PTV70"],
         "spacing": [2.5, 3.906, 3.906], "crop_box": [0, 5, 3, 15, 1, 11], "prescription_gy": 70.0,
         "crop_to_body": True, "representations": [], "source": "openkbp", "nested": {"a": [1, 2]}}


def test_round_trip_chunking_and_attributes(tmp_path):
    arrays = _arrays(np.random.default_rng(0))
    path = tmp_path / "case.h5"
    write_case_h5(path, arrays, ATTRS, compression_level=4)
    got, attrs = read_case_h5(path)
    for name in ("ct", "dose", "body", "masks", "possible_dose"):
        assert got[name].dtype == arrays[name].dtype
        np.testing.assert_array_equal(got[name], arrays[name])
    # distance maps: int16 steps of 0.1 mm (PSDM), 0.01 voxel (MSDM), 1e-4 (TSBDM); read as float32
    for name, step in (("psdm", 1e-3), ("msdm", 1e-2), ("tsbdm", 1e-4)):
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], arrays[name], atol=step / 2 + 1e-6)
    assert attrs == {"schema_version": 2, **ATTRS}
    with h5py.File(path, "r") as f:
        assert f["ct"].chunks == (1, 12, 10) and f["masks"].chunks == (3, 1, 12, 10)
        assert f["psdm"].dtype == np.int16 and f["psdm"].attrs["unit"] == "dm"
        for ds in f.values():
            assert ds.compression == "gzip" and ds.compression_opts == 4 and ds.shuffle


def test_quantisation_grows_step_instead_of_overflowing(tmp_path):
    big = {"ct": np.zeros((2, 4, 4), np.int16), "msdm": np.full((1, 2, 4, 4), 900.0, np.float32)}
    big["msdm"][0, 0, 0, 0] = -900.0
    write_case_h5(tmp_path / "big.h5", big, {})
    got, _ = read_case_h5(tmp_path / "big.h5")
    np.testing.assert_allclose(got["msdm"], big["msdm"], atol=900 / 32000)


def test_lazy_slices(tmp_path):
    arrays = _arrays(np.random.default_rng(1))
    path = tmp_path / "case.h5"
    write_case_h5(path, arrays, ATTRS)
    full, _ = read_case_h5(path)
    with H5Case(path) as case:
        assert case.n_slices == 5 and case.attrs["case_id"] == "pt_7"
        for z in (0, 3, 4):
            sl = case.slice(z)
            assert sl["ct"].shape == (12, 10) and sl["masks"].shape == (3, 12, 10)
            for name, arr in full.items():
                np.testing.assert_array_equal(sl[name], arr[:, z] if arr.ndim == 4 else arr[z])
        handle = case._file
        case.slice(1)
        assert case._file is handle  # stays open between slices
        clone = pickle.loads(pickle.dumps(case))  # for DataLoader workers
        np.testing.assert_array_equal(clone.slice(2)["dose"], full["dose"][2])
        clone.close()
        with pytest.raises(IndexError):
            case.slice(5)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "case.h5"
    arrays = _arrays(np.random.default_rng(2))
    real = h5mod.h5py.Group.create_dataset
    calls = {"n": 0}

    def failing(self, name, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5mod.h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="simulated"):
        write_case_h5(path, arrays, ATTRS)
    assert list(tmp_path.iterdir()) == []
    # an existing good file survives a failed rewrite untouched
    monkeypatch.setattr(h5mod.h5py.Group, "create_dataset", real)
    write_case_h5(path, arrays, ATTRS)
    before = path.read_bytes()
    calls["n"] = 0
    monkeypatch.setattr(h5mod.h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError):
        write_case_h5(path, {k: v * 2 for k, v in arrays.items()}, ATTRS)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["case.h5"]


def test_short_write_on_disk_is_caught_before_the_rename(tmp_path, monkeypatch):
    """A file that reaches the disk short (full disk, no error from write) must not become current."""
    path = tmp_path / "case.h5"
    real = h5mod.Path.write_bytes

    def short(self, data):
        return real(self, bytes(data)[: len(data) // 2])

    monkeypatch.setattr(h5mod.Path, "write_bytes", short)
    with pytest.raises(OSError, match="differs from the .* bytes written; disk full"):
        write_case_h5(path, _arrays(np.random.default_rng(3)), ATTRS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(3, 5, 12, 10), (2, 7, 128, 129), (0, 4)])
def test_quantise_in_blocks_equals_whole_array(shape):
    """Blockwise quantisation gives the whole-array formula's int16 values and scale exactly."""
    values = np.random.default_rng(4).normal(0, 900, shape).astype(np.float32)  # some steps grow
    got, scale = h5mod._quantise(values, 1e-2)
    peak = float(np.abs(values).max()) if values.size else 0.0
    expected_scale = max(1e-2, peak / h5mod._INT16_MAX)
    expected = np.rint(np.multiply(values, np.float32(1.0 / expected_scale), dtype=np.float32)).astype(np.int16)
    assert scale == expected_scale and got.dtype == np.int16 and got.shape == values.shape
    np.testing.assert_array_equal(got, expected)


def test_row_steps_are_stored_and_summed_back_exactly(tmp_path):
    """Schema 2 stores each row of a distance map as its first value and the steps along it; the
    steps wrap around int16 (here -32000 -> 32000), and reading gives back every value exactly."""
    values = np.random.default_rng(5).normal(0, 5, (2, 3, 4, 9)).astype(np.float32)
    values[0, 0, 0, :2] = [-320.0, 320.0]  # at the top of int16 at 0.01 voxel: a step of 64000 wraps
    path = tmp_path / "case.h5"
    write_case_h5(path, {"ct": np.zeros((3, 4, 9), np.int16), "msdm": values}, ATTRS)
    stored_values, scale = h5mod._quantise(values, h5mod.QUANTUM["msdm"])
    with h5py.File(path, "r") as f:
        raw = f["msdm"][()]
        assert f["msdm"].attrs["row_delta"] == 1
    expected_steps = np.concatenate([stored_values[..., :1], np.diff(stored_values.astype(np.int64), axis=-1)], -1)
    np.testing.assert_array_equal(raw, ((expected_steps + 32768) % 65536 - 32768).astype(np.int16))
    got = read_case_h5(path)[0]["msdm"]
    np.testing.assert_array_equal(got, stored_values.astype(np.float32) * np.float32(scale))
    with H5Case(path) as case:
        np.testing.assert_array_equal(case.slice(1)["msdm"], got[:, 1])
        np.testing.assert_array_equal(case.array("msdm"), got)


def test_schema_1_files_still_read(tmp_path):
    """Files written before row steps (schema 1: plain int16 values, no row_delta) read as before."""
    values = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5) - 50
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = 1
        f.create_dataset("ct", data=np.zeros((3, 4, 5), np.int16))
        f.create_dataset("psdm", data=values).attrs["scale"] = 1e-3
    got = read_case_h5(path)[0]["psdm"]
    np.testing.assert_array_equal(got, values.astype(np.float32) * np.float32(1e-3))
    with H5Case(path) as case:
        np.testing.assert_array_equal(case.slice(2)["psdm"], got[:, 2])


def test_wrong_schema_or_missing_file(tmp_path):
    with pytest.raises(InputError, match="file missing"):
        read_case_h5(tmp_path / "nope.h5")
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs["schema_version"] = 0
    with pytest.raises(InputError, match="schema_version 0.*schema_version 1 or 2.*re-run the preprocess"):
        read_case_h5(tmp_path / "old.h5")


def test_openkbp_official_split():
    ids = ["pt_1", "pt_200", "pt_201", "pt_240", "pt_241", "pt_340", "pt_17"]
    splits = make_splits(ids, "openkbp", SplitConfig())
    assert splits == {"train": ["pt_1", "pt_17", "pt_200"], "validation": ["pt_201", "pt_240"],
                      "test": ["pt_241", "pt_340"]}
    with pytest.raises(InputError, match="pt_341"):
        make_splits(["pt_341"], "openkbp", SplitConfig())
    with pytest.raises(InputError, match="patient_a"):
        make_splits(["patient_a"], "openkbp", SplitConfig())


def test_seeded_split_properties():
    ids = [f"case_{i:03d}" for i in range(1, 31)]
    a = make_splits(ids, "dicom", SplitConfig(seed=3))
    b = make_splits(list(reversed(ids)), "dicom", SplitConfig(seed=3))
    assert a == b  # independent of input order, deterministic for a seed
    assert sorted(sum(a.values(), [])) == sorted(ids)  # every case exactly once
    assert [len(a[k]) for k in ("train", "validation", "test")] == [21, 3, 6]  # 7:1:2
    assert make_splits(ids, "dicom", SplitConfig(seed=4)) != a
    for n in range(3, 12):
        s = make_splits([f"p{i}" for i in range(n)], "phantom", SplitConfig())
        assert all(s[k] for k in ("train", "validation", "test")), (n, s)
        assert sum(len(v) for v in s.values()) == n
    assert make_splits(["p0"], "phantom", SplitConfig()) == {"train": ["p0"], "validation": [], "test": []}
    with pytest.raises(InputError, match="duplicate"):
        make_splits(["p1", "p1", "p2"], "dicom", SplitConfig())


def test_write_splits_atomic_json(tmp_path):
    splits = {"train": ["a", "b"], "validation": ["c"], "test": ["d"]}
    path = tmp_path / "sub" / "splits.json"
    write_splits(path, splits)
    assert json.loads(path.read_text()) == splits
    assert [p.name for p in path.parent.iterdir()] == ["splits.json"]

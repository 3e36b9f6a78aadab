"""The fast preprocessing paths against independent computations (scipy, whole-grid EDTs).

Body mask: SimpleITK labelling vs scipy.ndimage.label / binary_fill_holes, voxel for voxel.
Distance maps: the pipeline's PSDM vs the boundary convention of preprocess/distance.py
computed with scipy's exact EDT on the whole grid, for one real OpenKBP patient; the stored
int16 values must match those of the independent float32 maps (quantised the same way).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from dosediff.config import DatasetConfig, PreprocessConfig
from dosediff.data import h5 as h5mod
from dosediff.io.openkbp import read_openkbp_case
from dosediff.preprocess.body import body_mask, fill_holes_per_slice, largest_component
from dosediff.preprocess.distance import MM_PER_DM
from dosediff.preprocess.pipeline import preprocess_case

ROIS = ["PTV70", "PTV63", "PTV56", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus",
        "Larynx", "Mandible"]


def _scipy_largest(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _scipy_fill(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndi.binary_fill_holes(s) for s in mask])


@pytest.mark.parametrize("seed", range(6))
def test_body_steps_equal_scipy_on_random_volumes(seed):
    """Noise volumes: many components (ties of the largest among them) and many holes."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 24, 3))
    mask = rng.random(shape) < rng.uniform(0.25, 0.75)
    np.testing.assert_array_equal(largest_component(mask), _scipy_largest(mask))
    np.testing.assert_array_equal(fill_holes_per_slice(mask), _scipy_fill(mask))


def test_largest_component_tie_takes_the_first_in_c_order():
    mask = np.zeros((1, 3, 7), dtype=bool)
    mask[0, 2, 0:2] = True  # two blobs of 2 voxels; the one in row 0 comes first in C order
    mask[0, 0, 5:7] = True
    np.testing.assert_array_equal(largest_component(mask), _scipy_largest(mask))
    assert largest_component(mask)[0, 0, 5]


def _signed_mm(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """distance.py's convention from whole-grid scipy EDTs: L - min(L/2, h) on each side."""
    half = np.float32(max(spacing) / 2.0)
    out_len = ndi.distance_transform_edt(~mask, sampling=spacing).astype(np.float32)
    in_len = ndi.distance_transform_edt(mask, sampling=spacing).astype(np.float32)
    surf = [length - np.minimum(length * np.float32(0.5), half) for length in (in_len, out_len)]
    return np.where(mask, surf[0], -surf[1]).astype(np.float32)


def test_pipeline_on_a_real_patient_equals_independent_computation(openkbp_dir, tmp_path):
    folder = openkbp_dir / "train-pats" / "pt_1"
    dataset = DatasetConfig(name="openkbp", source="openkbp", input_dir=str(folder.parent), rois=ROIS,
                            targets={"PTV70": 70.0}, prescription_gy=70.0)
    case = read_openkbp_case(folder, "pt_1", dataset)
    cfg = PreprocessConfig(crop_to_body=False, size=[128, 128], representations=["psdm"])
    preprocess_case(case, dataset, cfg, tmp_path / "pt_1.h5")
    with h5mod.h5py.File(tmp_path / "pt_1.h5", "r") as f:
        stored = {name: f[name][()] for name in f}
        scale = float(f["psdm"].attrs["scale"])
        assert f["psdm"].attrs["row_delta"] == 1
    stored["psdm"] = np.cumsum(stored["psdm"], axis=-1, dtype=np.int16)  # schema 2: rows stored as steps
    body = _scipy_fill(_scipy_largest(case.ct > cfg.body_threshold_hu)).astype(np.uint8)
    np.testing.assert_array_equal(stored["body"], body)
    np.testing.assert_array_equal(stored["ct"], case.ct)
    np.testing.assert_array_equal(stored["dose"], case.dose)
    maps = np.zeros((len(ROIS), *case.ct.shape), dtype=np.float32)
    for k, name in enumerate(ROIS):
        if name in case.masks:
            np.testing.assert_array_equal(stored["masks"][k], case.masks[name] > 0)
            maps[k] = _signed_mm(case.masks[name] > 0, case.geometry.spacing) / np.float32(MM_PER_DM)
        else:
            assert not stored["masks"][k].any() and not stored["psdm"][k].any()
    expected, expected_scale = h5mod._quantise(maps, h5mod.QUANTUM["psdm"])
    assert scale == pytest.approx(expected_scale, rel=1e-6)
    # float32 EDTs of ITK and scipy may differ in the last bit, which can move a value across
    # a rounding boundary of the 0.1 mm step: at most one step, on very few voxels
    diff = np.abs(stored["psdm"].astype(np.int32) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4  # pt_1: 1179 of 21 M voxels

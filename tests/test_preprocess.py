"""Body mask, crop/resize and its inverse, and the preprocess stage end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dosediff.config import DatasetConfig, PreprocessConfig
from dosediff.data.h5 import read_case_h5
from dosediff.errors import InputError
from dosediff.preprocess.body import body_mask
from dosediff.preprocess.pipeline import preprocess_case
from dosediff.preprocess.resample import (
    bounding_box,
    crop,
    crop_resize,
    grid_attrs,
    original_geometry,
    resize_inplane,
    restore_to_original,
)
from dosediff.volume import Case, Geometry

OPENKBP_ROIS = ["PTV70", "PTV63", "PTV56", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus",
                "Larynx", "Mandible"]


def _synthetic_case() -> Case:
    """Elliptic body with an enclosed air cavity, a stray dense blob outside, two ROIs and a
    smooth dose peaked on the target."""
    shape, spacing = (24, 80, 72), (3.0, 2.0, 2.0)
    z, y, x = np.indices(shape, dtype=np.float64)
    body = ((y - 42) / 26) ** 2 + ((x - 34) / 22) ** 2 <= 1
    body[:3] = False  # the body starts at slice 3
    ct = np.where(body, 40, -1000).astype(np.int16)
    ct[10:14, 38:44, 30:36] = -900  # air cavity enclosed in every slice
    ct[5:7, 2:5, 60:64] = 300  # dense blob outside the body (a couch or a marker)
    target = ((z - 12) / 4) ** 2 + ((y - 45) / 8) ** 2 + ((x - 30) / 7) ** 2 <= 1
    oar = ((z - 12) / 3) ** 2 + ((y - 30) / 4) ** 2 + ((x - 45) / 4) ** 2 <= 1
    r2 = ((z - 12) * 3) ** 2 + ((y - 45) * 2) ** 2 + ((x - 30) * 2) ** 2
    dose = (60 * np.exp(-r2 / (2 * 30.0**2)) * body).astype(np.float32)
    geometry = Geometry(shape, spacing, origin=(-70.0, -80.0, 100.0))
    return Case("synth_1", geometry, ct, dose, masks={"PTV": target.astype(np.uint8), "Cord": oar.astype(np.uint8)},
                prescription_gy=60.0, meta={"source": "phantom"})


SYNTH_DATASET = DatasetConfig(name="synth", source="phantom", rois=["PTV", "Cord", "Heart"], targets={"PTV": 60.0},
                              prescription_gy=60.0)


def test_body_mask_fills_hole_and_drops_stray_blob():
    case = _synthetic_case()
    body = body_mask(case.ct, -500.0)
    assert body.dtype == np.uint8
    assert body[12, 40, 32] == 1  # the enclosed cavity is filled
    assert body[6, 3, 61] == 0  # the stray blob is not the largest component
    z, y, x = np.indices(case.ct.shape)
    expected = (((y - 42) / 26) ** 2 + ((x - 34) / 22) ** 2 <= 1) & (z >= 3)
    np.testing.assert_array_equal(body, expected.astype(np.uint8))
    assert not body_mask(np.full((4, 5, 6), -1000, np.int16), -500.0).any()


def test_resize_matches_torch_half_pixel_convention():
    """Reference implementation: torch bilinear interpolation with align_corners=False."""
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(3, 37, 29)).astype(np.float32)
    for size in [(64, 48), (20, 16), (37, 50), (11, 29)]:
        ours = resize_inplane(vol, size)
        ref = torch.nn.functional.interpolate(torch.from_numpy(vol)[None], size=size, mode="bilinear",
                                              align_corners=False)[0].numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_same_size_is_exact_and_masks_threshold():
    vol = np.arange(2 * 8 * 9, dtype=np.int16).reshape(2, 8, 9)
    out = resize_inplane(vol, (8, 9), "ct")
    assert out.dtype == np.int16 and np.array_equal(out, vol)
    mask = np.zeros((1, 10, 10), np.uint8)
    mask[0, 2:8, 3:7] = 1
    up = resize_inplane(mask, (20, 20), "mask")
    assert up.dtype == np.uint8 and set(np.unique(up)) == {0, 1}
    assert up.sum() == 4 * mask.sum()  # exact for a 2x upsample of an axis-aligned box
    ct = resize_inplane(np.array([[[-1000, 1000]]], np.int16), (1, 4), "ct")
    np.testing.assert_array_equal(ct, [[[-1000, -500, 500, 1000]]])


def test_crop_box_attrs_round_trip():
    case = _synthetic_case()
    body = body_mask(case.ct, -500.0)
    box = bounding_box(body)
    assert box == (3, 24, 16, 69, 12, 57)
    attrs = grid_attrs(case.geometry, box, (53, 45))  # cropped in-plane size: no resize
    assert attrs["cropped_shape"] == [21, 53, 45] and attrs["resize_factors"] == [1.0, 1.0, 1.0]
    stored = crop_resize(case.dose, box, (53, 45))
    back = restore_to_original(stored, attrs)
    np.testing.assert_array_equal(crop(back, box), crop(case.dose, box))
    outside = np.ones(case.dose.shape, bool)
    outside[box[0]:box[1], box[2]:box[3], box[4]:box[5]] = False
    assert not back[outside].any()
    assert back.shape == case.geometry.shape


def stored_geometry(attrs: dict) -> Geometry:
    """Geometry of the stored (cropped, resized) grid, in the original patient frame.

    With the half-pixel convention, stored pixel i has its centre at cropped index
    (i + 0.5) / factor - 0.5, so the origin moves by half a stored pixel minus half an original one.
    """
    original = original_geometry(attrs)
    z0, _, y0, _, x0, _ = attrs["crop_box"]
    f = np.asarray(attrs["resize_factors"], dtype=float)
    start = np.array([z0, y0, x0], dtype=float) + 0.5 / f - 0.5  # (z, y, x) original index of stored voxel 0
    origin = original.index_to_world(start)
    Z, H, W = attrs["cropped_shape"][0], round(attrs["cropped_shape"][1] * f[1]), round(attrs["cropped_shape"][2] * f[2])
    return Geometry((Z, H, W), tuple(attrs["spacing"]), tuple(origin), original.direction)


def test_stored_geometry_places_resized_voxels():
    """A field linear in physical position is reproduced exactly by linear resizing, so the
    stored voxels must sit where stored_geometry says (away from the clamped border)."""
    geom = Geometry((6, 40, 30), (2.5, 1.5, 2.0), origin=(10.0, -20.0, 5.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    pts = geom.index_to_world(np.moveaxis(np.indices(geom.shape), 0, -1))  # (Z, Y, X, 3) x, y, z mm
    field = (0.3 * pts[..., 0] - 0.7 * pts[..., 1] + 0.1 * pts[..., 2]).astype(np.float32)
    box = (1, 6, 4, 36, 3, 27)
    attrs = grid_attrs(geom, box, (24, 16))
    stored = crop_resize(field, box, (24, 16))
    sgeom = stored_geometry(attrs)
    assert sgeom.shape == stored.shape
    spts = sgeom.index_to_world(np.moveaxis(np.indices(sgeom.shape), 0, -1))
    expected = 0.3 * spts[..., 0] - 0.7 * spts[..., 1] + 0.1 * spts[..., 2]
    np.testing.assert_allclose(stored[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-3)


def test_synthetic_case_inverse_mapping(tmp_path):
    case = _synthetic_case()
    cfg = PreprocessConfig(crop_to_body=True, size=[40, 32], representations=["psdm", "msdm", "tsbdm"])
    out = tmp_path / "synth_1.h5"
    preprocess_case(case, SYNTH_DATASET, cfg, out)
    arrays, attrs = read_case_h5(out)
    assert arrays["ct"].shape == (21, 40, 32) and arrays["masks"].shape == (3, 21, 40, 32)
    assert attrs["rois_present"] == ["PTV", "Cord"] and not arrays["masks"][2].any()
    assert not arrays["psdm"][2].any() and arrays["tsbdm"].max() <= 1.0
    assert attrs["spacing"] == pytest.approx([3.0, 2.0 * 53 / 40, 2.0 * 45 / 32])
    back = restore_to_original(arrays["dose"], attrs)
    body = body_mask(case.ct, cfg.body_threshold_hu).astype(bool)
    mae = np.abs(back - case.dose)[body].mean()
    assert mae < 0.01 * case.dose.max()
    # the PSDM was computed on the original grid: resizing it back agrees with a direct computation
    from dosediff.preprocess.distance import psdm

    direct = psdm(case.masks["PTV"], case.geometry.spacing)
    psdm_back = restore_to_original(arrays["psdm"][0], attrs)
    assert np.abs(psdm_back - direct)[body].mean() < 0.01  # dm, i.e. 1 mm


def test_openkbp_inverse_mapping_cropped_resized(openkbp_dir, tmp_path):
    from dosediff.io.openkbp import read_openkbp_case

    dataset = DatasetConfig(name="openkbp", source="openkbp", input_dir=str(openkbp_dir), rois=OPENKBP_ROIS,
                            targets={"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}, prescription_gy=70.0,
                            lr_pairs=[["LeftParotid", "RightParotid"]])
    case = read_openkbp_case(openkbp_dir / "train-pats" / "pt_1", "pt_1", dataset)
    cfg = PreprocessConfig(crop_to_body=True, size=[96, 96], representations=[])
    out = tmp_path / "pt_1.h5"
    preprocess_case(case, dataset, cfg, out)
    arrays, attrs = read_case_h5(out)
    assert arrays["dose"].shape[1:] == (96, 96)
    z0, z1, y0, y1, x0, x1 = attrs["crop_box"]
    assert (y1 - y0, x1 - x0) != (96, 96)  # a real resize happened
    back = restore_to_original(arrays["dose"], attrs)
    body = body_mask(case.ct, cfg.body_threshold_hu).astype(bool)
    mae = np.abs(back - case.dose)[body].mean()
    assert mae < 0.01 * case.dose.max(), mae


def test_empty_ct_is_a_clear_error(tmp_path):
    case = _synthetic_case()
    case.ct[:] = -1000
    with pytest.raises(InputError, match="synth_1.*body_threshold_hu"):
        preprocess_case(case, SYNTH_DATASET, PreprocessConfig(), tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())


def test_case_without_any_roi(tmp_path):
    case = _synthetic_case()
    case.masks = {}
    cfg = PreprocessConfig(crop_to_body=False, size=[80, 72], representations=["psdm"])
    preprocess_case(case, SYNTH_DATASET, cfg, tmp_path / "empty.h5")
    arrays, attrs = read_case_h5(tmp_path / "empty.h5")
    assert attrs["rois_present"] == [] and arrays["psdm"].shape == (3, 24, 80, 72)
    assert not arrays["psdm"].any() and not arrays["masks"].any()
    np.testing.assert_array_equal(arrays["dose"], case.dose)  # no crop, no resize: exact


def test_restore_inverts_an_upsample_exactly_and_a_downsample_linearly():
    rng = np.random.default_rng(5)
    geom = Geometry((4, 30, 26), (3.0, 2.0, 2.0))
    vol = rng.normal(size=geom.shape).astype(np.float32)
    box = (0, 4, 2, 27, 3, 24)  # cropped (25, 21)
    up = grid_attrs(geom, box, (40, 33))
    back = restore_to_original(crop_resize(vol, box, (40, 33)), up)
    np.testing.assert_allclose(crop(back, box), crop(vol, box), atol=1e-4)  # even white noise comes back
    down = grid_attrs(geom, box, (12, 10))
    stored = crop_resize(vol, box, (12, 10))
    np.testing.assert_allclose(crop(restore_to_original(stored, down), box), resize_inplane(stored, (25, 21)),
                               atol=1e-6)
    mixed = grid_attrs(geom, box, (50, 10))  # up in y, down in x
    mask = (vol > 0.3).astype(np.uint8)
    got = restore_to_original(crop_resize(mask, box, (50, 10), "mask"), mixed, kind="mask")
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1} and got.shape == geom.shape

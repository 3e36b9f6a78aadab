"""Training slices: axis, normalisation, condition channels, augmentation, lr pairs, data order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dosediff.data.augment import AugmentParams, apply_transform, lr_permutation
from dosediff.data.dataset import SliceDataset, denormalise_dose, normalise_ct, normalise_dose
from dosediff.errors import InputError
from dosediff.experiment import ExperimentConfig
from dosediff.training.sampler import StepBatches
from synthetic_h5 import LR_PAIRS, ROIS, TINY_NETWORK, make_case, write_case


def experiment(condition: str = "psdm", **train) -> ExperimentConfig:
    return ExperimentConfig.from_mapping({"condition": condition, "network": TINY_NETWORK, "train": train},
                                         "toy", ROIS)


@pytest.fixture
def case_path(tmp_path):
    return write_case(tmp_path / "c.h5", make_case(np.random.default_rng(1)), "c")


def test_normalisation_known_values():
    hu = np.array([-2000.0, -1000.0, 250.0, 1500.0, 3000.0])
    np.testing.assert_allclose(normalise_ct(hu, [-1000, 1500]), [-1, -1, 0, 1, 1])
    gy = np.array([-1.0, 0.0, 37.5, 75.0, 90.0])
    np.testing.assert_allclose(normalise_dose(gy, 75.0), [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(normalise_dose(np.array([40.0]), 80.0), [0.0])  # OpenKBP's 80 Gy
    np.testing.assert_allclose(denormalise_dose(torch.tensor([-1.5, 0.0, 0.5]), 75.0).numpy(), [0, 37.5, 56.25])


def test_slices_cut_along_axis0_and_normalised(tmp_path):
    arrays = make_case(np.random.default_rng(0), z=4, h=16, w=16)
    z_hu = np.array([0, -500, 250, 1000], np.float32)  # one CT value per slice: tells the axis
    arrays["ct"] = np.broadcast_to(z_hu[:, None, None], (4, 16, 16)).astype(np.int16).copy()
    arrays["dose"] = np.broadcast_to(np.array([0, 15, 37.5, 75], np.float32)[:, None, None], (4, 16, 16)).copy()
    arrays["body"][:] = 1
    path = write_case(tmp_path / "a.h5", arrays, "a")
    ds = SliceDataset([path], experiment("msdm"), ROIS)
    assert len(ds) == 4 and ds.image_size == [16, 16]
    for z, (hu, gy) in enumerate(zip(z_hu, [0, 15, 37.5, 75])):
        item = ds[z]
        assert item["ct"].shape == (1, 16, 16) and item["cond"].shape == (3, 16, 16)
        np.testing.assert_allclose(item["ct"].numpy(), (hu + 1000) / 2500 * 2 - 1, atol=1e-6)
        np.testing.assert_allclose(item["dose"].numpy(), gy / 75 * 2 - 1, atol=1e-6)
        np.testing.assert_allclose(item["cond"].numpy(), arrays["msdm"][:, z] / 100.0, atol=1e-4)  # voxels / 100


def test_condition_channels(case_path):
    arrays = make_case(np.random.default_rng(1))
    body_z = [z for z in range(arrays["ct"].shape[0]) if arrays["body"][z].any()]
    for condition, expected in [("psdm", arrays["psdm"]), ("mask", arrays["masks"].astype(np.float32))]:
        ds = SliceDataset([case_path], experiment(condition), ROIS)
        assert len(ds) == len(body_z) == arrays["ct"].shape[0] - 1  # the empty slice 0 is skipped
        item = ds[0]
        np.testing.assert_allclose(item["cond"].numpy(), expected[:, body_z[0]], atol=1e-3)
    ds = SliceDataset([case_path], experiment("none"), ROIS)
    assert ds[0]["cond"].shape == (0, 16, 16)
    ds = SliceDataset([case_path], experiment("psdm", slices_with_body_only=False), ROIS)
    assert len(ds) == arrays["ct"].shape[0]


def test_missing_representation_and_roi_order_are_input_errors(case_path):
    with pytest.raises(InputError, match="tsbdm"):
        SliceDataset([case_path], experiment("tsbdm"), ROIS)
    with pytest.raises(InputError, match="dataset.rois"):
        SliceDataset([case_path], ExperimentConfig.from_mapping({"network": TINY_NETWORK}, "toy", ROIS[::-1]),
                     ROIS[::-1])


def _same_pattern_case(tmp_path):
    """CT and dose whose normalised values are equal everywhere; PSDM channel 0 equal to them too."""
    arrays = make_case(np.random.default_rng(2), z=3, h=16, w=24)
    yy, xx = np.mgrid[0:16, 0:24]
    hu = (-1000 + 2500 * ((xx + 2 * yy) % 11) / 10.0).astype(np.int16)  # asymmetric pattern
    arrays["ct"] = np.broadcast_to(hu, (3, 16, 24)).copy()
    arrays["dose"] = ((arrays["ct"].astype(np.float32) + 1000) / 2500 * 75).astype(np.float32)
    arrays["psdm"][0] = (arrays["ct"] + 1000) / 2500 * 2 - 1
    arrays["body"][:] = 1
    return write_case(tmp_path / "p.h5", arrays, "p")


def test_augmentation_same_transform_on_every_channel(tmp_path):
    path = _same_pattern_case(tmp_path)
    aug = {"flip_prob": 0.5, "affine_prob": 1.0, "rotation_deg": 30.0, "zoom_range": [1.0, 1.3]}
    ds = SliceDataset([path], experiment("psdm", augmentation=aug), ROIS, LR_PAIRS, augment=True)
    plain = ds[0]
    centre = (slice(5, 11), slice(7, 17))  # never sampled from outside the image at these zooms
    changed = 0
    for position in range(8):
        item = ds[(0, position)]
        np.testing.assert_allclose(item["ct"].numpy(), item["dose"].numpy(), atol=1e-5)
        np.testing.assert_allclose(item["cond"][0][centre].numpy(), item["ct"][0][centre].numpy(), atol=1e-3)
        assert set(np.unique(item["body"].numpy())) <= {0.0, 1.0}
        changed += not torch.equal(item["ct"], plain["ct"])
        assert torch.equal(item["ct"], ds[(0, position)]["ct"])  # the position seeds it: reproducible
    assert changed == 8


def test_mask_channels_stay_binary_under_rotation(case_path):
    aug = {"affine_prob": 1.0, "rotation_deg": 40.0, "zoom_range": [0.8, 1.2]}
    ds = SliceDataset([case_path], experiment("mask", augmentation=aug), ROIS, LR_PAIRS, augment=True)
    for position in range(4):
        assert set(np.unique(ds[(1, position)]["cond"].numpy())) <= {0.0, 1.0}


def test_rotation_matches_exact_references():
    x = torch.arange(36, dtype=torch.float32).reshape(1, 6, 6) / 36 * 2 - 1
    kinds = {"ct": "intensity"}
    r_plus = apply_transform({"ct": x}, kinds, AugmentParams(angle_deg=90.0), [])["ct"]
    r_minus = apply_transform({"ct": x}, kinds, AugmentParams(angle_deg=-90.0), [])["ct"]
    rots = [torch.rot90(x, k, dims=(1, 2)) for k in (1, -1)]
    assert any(torch.allclose(r_plus, r, atol=1e-5) for r in rots)
    assert torch.allclose(torch.rot90(r_plus, 2, dims=(1, 2)), r_minus, atol=1e-5)
    # non-square: 180 degrees is both flips, and 90 degrees keeps a centred disk round (no shear)
    y = torch.rand(1, 8, 12) * 2 - 1
    r180 = apply_transform({"ct": y}, kinds, AugmentParams(angle_deg=180.0), [])["ct"]
    assert torch.allclose(r180, torch.flip(y, dims=(1, 2)), atol=1e-5)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(64.0), indexing="ij")
    disk = ((yy - 15.5) ** 2 + (xx - 31.5) ** 2 <= 10.0**2).float()[None]
    rotated = apply_transform({"m": disk}, {"m": "label"}, AugmentParams(angle_deg=90.0), [])["m"]
    assert (rotated != disk).float().mean() < 0.01
    zoomed = apply_transform({"m": disk}, {"m": "label"}, AugmentParams(zoom=1.4), [])["m"]
    assert abs(float(zoomed.sum()) / float(disk.sum()) - 1.96) < 0.1  # area scales with zoom squared


def test_left_right_flip_swaps_paired_channels(case_path):
    ds = SliceDataset([case_path], experiment("mask", augmentation={"flip_prob": 1.0, "affine_prob": 0.0}),
                      ROIS, LR_PAIRS, augment=True)
    plain, flipped = ds[1], ds[(1, 0)]
    assert lr_permutation(ROIS, LR_PAIRS) == [0, 2, 1]
    assert torch.equal(flipped["ct"], torch.flip(plain["ct"], dims=[-1]))
    assert torch.equal(flipped["dose"], torch.flip(plain["dose"], dims=[-1]))
    assert torch.equal(flipped["cond"][0], torch.flip(plain["cond"][0], dims=[-1]))  # PTV stays PTV
    assert torch.equal(flipped["cond"][1], torch.flip(plain["cond"][2], dims=[-1]))  # right lung -> LungL
    assert torch.equal(flipped["cond"][2], torch.flip(plain["cond"][1], dims=[-1]))
    # the anatomy agrees: the LungL channel lies where the CT's left-side lung now is
    assert plain["cond"][1].sum() > 0 and not torch.equal(plain["cond"][1], flipped["cond"][1])


def test_step_batches_split_ranks_and_resume():
    one = StepBatches(10, 4, seed=3, start=0, stop=6, rank=0, world=1)
    keys = [k for batch in one for k in batch]
    assert sorted(i for i, _ in keys[:10]) == list(range(10))  # an epoch is a permutation
    ranks = [StepBatches(10, 2, seed=3, start=0, stop=6, rank=r, world=2) for r in range(2)]
    for step in range(6):
        shares = [set(r.keys(step)) for r in ranks]
        assert not shares[0] & shares[1]
        assert shares[0] | shares[1] == set(one.keys(step))  # the ranks share one step's positions
    resumed = StepBatches(10, 4, seed=3, start=4, stop=6)
    assert list(resumed) == list(one)[4:]

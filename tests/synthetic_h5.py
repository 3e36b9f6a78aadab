"""A tiny synthetic HDF5 data set (schema of dosediff.data.h5) for the training tests.

Each case: Z slices of H x W; an elliptic body at 0 HU in air; a left and a right lung at
-800 HU in the x halves (x = last axis, the patient left-right axis); a PTV disk whose
dose falls off with distance. Slice 0 has no body (tests the body-only filter). The dose
is a smooth function of the CT and PTV, so a small network can learn it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from dosediff.data.h5 import write_case_h5

ROIS = ["PTV", "LungL", "LungR"]
LR_PAIRS = [["LungL", "LungR"]]


def signed_distance(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Positive inside, negative outside, in the units of `spacing` (all-zero for an empty mask)."""
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    inside = distance_transform_edt(mask, sampling=spacing)
    outside = distance_transform_edt(~mask, sampling=spacing) if not mask.all() else np.zeros(mask.shape)
    return (inside - outside).astype(np.float32)


def make_case(rng: np.random.Generator, z: int = 5, h: int = 16, w: int = 16) -> dict[str, np.ndarray]:
    """Arrays of one synthetic case, (Z, H, W) and (K, Z, H, W)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    body2d = ((yy - cy) / (0.45 * h)) ** 2 + ((xx - cx) / (0.45 * w)) ** 2 <= 1
    lung_l2d = body2d & (((yy - cy) / (0.25 * h)) ** 2 + ((xx - cx - 0.22 * w) / (0.12 * w)) ** 2 <= 1)
    # the right lung smaller and lower than the left: a left-right flip is visible
    lung_r2d = body2d & (((yy - cy - 1) / (0.2 * h)) ** 2 + ((xx - cx + 0.22 * w) / (0.09 * w)) ** 2 <= 1)
    py, px = cy + rng.uniform(-2, 2), cx + rng.uniform(-1.5, 1.5)
    r = rng.uniform(2.0, 3.0)
    ptv2d = (yy - py) ** 2 + (xx - px) ** 2 <= r * r
    body = np.repeat(body2d[None], z, 0)
    body[0] = False
    ptv = np.repeat(ptv2d[None], z, 0) & body
    lung_l, lung_r = np.repeat(lung_l2d[None], z, 0) & body, np.repeat(lung_r2d[None], z, 0) & body
    ct = np.where(body, 0.0, -1000.0) + np.where(lung_l | lung_r, -800.0, 0.0)
    ct = ct + rng.normal(0, 10, ct.shape) * body
    dist = np.sqrt((yy - py) ** 2 + (xx - px) ** 2)
    dose2d = 60.0 * np.exp(-np.maximum(dist - r, 0) ** 2 / 18.0)
    dose = np.where(body, dose2d[None], 0.0).astype(np.float32)
    masks = np.stack([ptv, lung_l, lung_r]).astype(np.uint8)
    spacing = (3.0, 2.0, 2.0)  # mm
    psdm = np.stack([signed_distance(m.astype(bool), spacing) / 100.0 for m in masks])  # dm
    msdm = np.stack([signed_distance(m.astype(bool), (1.0, 1.0, 1.0)) for m in masks])  # voxels
    return {"ct": ct.astype(np.int16), "dose": dose, "body": body.astype(np.uint8), "masks": masks,
            "psdm": psdm, "msdm": msdm}


def write_case(path: Path, arrays: dict[str, np.ndarray], case_id: str) -> Path:
    attrs = {"case_id": case_id, "roi_names": ROIS, "spacing": [3.0, 2.0, 2.0], "prescription_gy": 60.0}
    write_case_h5(path, arrays, attrs)
    return path


def write_toy_set(root: Path, n_train: int = 3, n_val: int = 1, seed: int = 0, **size: int) -> tuple[Path, Path]:
    """Write train/validation cases and splits.json under root; return (h5_dir, splits_path)."""
    rng = np.random.default_rng(seed)
    h5_dir = root / "h5"
    names = {"train": [f"case_{i:02d}" for i in range(n_train)],
             "validation": [f"case_{i:02d}" for i in range(n_train, n_train + n_val)], "test": []}
    for case in names["train"] + names["validation"]:
        write_case(h5_dir / f"{case}.h5", make_case(rng, **size), case)
    splits = root / "splits.json"
    splits.write_text(json.dumps(names))
    return h5_dir, splits


TINY_NETWORK = {
    "width": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [], "num_heads": 2,
    "norm_groups": 8, "fusion_patch_size": [2, 2], "fusion_dim": 16, "fusion_mlp_dim": 32,
}


def settings(experiment: dict, rois: list[str] = ROIS) -> dict:
    """Workflow-config sections for one experiment named "toy"."""
    return {"dataset": {"rois": rois, "lr_pairs": LR_PAIRS}, "experiments": {"toy": experiment}}

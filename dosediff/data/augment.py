"""Online augmentation of one normalised training slice: flips, rotation and zoom.

One transform is drawn per slice and applied to every channel alike; only the
interpolation and the fill outside the image differ by channel kind:

- "intensity" (CT, dose, both in [-1, 1]): bilinear; outside the image is -1 (air, 0 Gy).
- "distance" (PSDM, MSDM, TSBDM): bilinear; outside repeats the border value (a fill of 0
  would draw a false ROI boundary at the image edge).
- "label" (masks, body): nearest neighbour, outside 0, so they stay binary.

A left-right flip reverses the x axis (the last array axis: patient left-right in the
(z, y, x) Case contract) and swaps the channels of each paired left/right ROI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dosediff.experiment import AugmentConfig


@dataclass(frozen=True)
class AugmentParams:
    """One drawn transform: flips, rotation angle (degrees) and zoom (> 1 magnifies)."""

    flip_lr: bool = False
    flip_ap: bool = False
    angle_deg: float = 0.0
    zoom: float = 1.0

    @property
    def has_affine(self) -> bool:
        return self.angle_deg != 0.0 or self.zoom != 1.0


def draw_params(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentParams:
    """Draw one transform; the same number of draws every time, so streams stay aligned."""
    u = rng.random(5)
    if not cfg.enabled:
        return AugmentParams()
    affine = u[2] < cfg.affine_prob
    angle = float((2.0 * u[3] - 1.0) * cfg.rotation_deg) if affine else 0.0
    lo, hi = cfg.zoom_range
    zoom = float(lo + u[4] * (hi - lo)) if affine else 1.0
    return AugmentParams(bool(u[0] < cfg.flip_prob), bool(u[1] < cfg.flip_ap_prob), angle, zoom)


def affine_theta(angle_deg: float, zoom: float, rows: int, cols: int) -> torch.Tensor:
    """(1, 2, 3) grid_sample matrix rotating by angle and scaling by zoom about the centre, in
    pixel units (so non-square slices are not sheared)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a) / zoom, math.sin(a) / zoom  # output pixel -> input pixel
    # normalised coords are pixel coords divided by (cols/2, rows/2): conjugate by that scaling
    theta = torch.tensor([[c, -s * rows / cols, 0.0], [s * cols / rows, c, 0.0]], dtype=torch.float32)
    return theta.unsqueeze(0)


def _warp(x: torch.Tensor, grid: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """Resample (C, H, W) on a (1, H, W, 2) grid."""
    return F.grid_sample(x.unsqueeze(0), grid, mode=mode, padding_mode=padding, align_corners=False)[0]


def apply_transform(
    channels: dict[str, torch.Tensor], kinds: dict[str, str], params: AugmentParams, lr_swap: list[int]
) -> dict[str, torch.Tensor]:
    """Transform named (C, H, W) float tensors alike; `kinds` gives each one's channel kind
    and `lr_swap` the channel permutation of the "cond" entry under a left-right flip."""
    out = dict(channels)
    if params.has_affine:
        rows, cols = next(iter(channels.values())).shape[-2:]
        theta = affine_theta(params.angle_deg, params.zoom, rows, cols)
        grid = F.affine_grid(theta, [1, 1, rows, cols], align_corners=False)  # (1, H, W, 2)
        for name, x in channels.items():
            kind = kinds[name]
            if x.shape[0] == 0:
                continue
            if kind == "intensity":  # fill -1: shift so the zero padding lands on -1
                out[name] = _warp(x + 1.0, grid, "bilinear", "zeros") - 1.0
            elif kind == "distance":
                out[name] = _warp(x, grid, "bilinear", "border")
            elif kind == "label":
                out[name] = _warp(x, grid, "nearest", "zeros")
            else:
                raise ValueError(f"unknown channel kind {kind!r}")
    if params.flip_lr:
        out = {k: torch.flip(v, dims=[-1]) for k, v in out.items()}
        if "cond" in out and out["cond"].shape[0]:
            out["cond"] = out["cond"][lr_swap]
    if params.flip_ap:
        out = {k: torch.flip(v, dims=[-2]) for k, v in out.items()}
    return out


def lr_permutation(rois: list[str], lr_pairs: list[list[str]]) -> list[int]:
    """Channel order after a left-right flip: each paired ROI takes its partner's channel."""
    perm = list(range(len(rois)))
    for left, right in lr_pairs:
        i, j = rois.index(left), rois.index(right)
        perm[i], perm[j] = j, i
    return perm

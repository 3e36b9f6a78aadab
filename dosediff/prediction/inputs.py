"""One preprocessed case -> the normalised network inputs of the slices that can receive dose.

Normalisation goes through dosediff.data.dataset (normalise_ct, normalise_condition) and the
HDF5 is checked with its check_case (ROI order, condition array present), so training and
prediction see identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dosediff.data.dataset import check_case, condition_key, normalise_condition, normalise_ct
from dosediff.data.h5 import read_case_h5
from dosediff.errors import input_error
from dosediff.experiment import ExperimentConfig


@dataclass
class CaseInputs:
    """Network inputs of one case on the stored (cropped, resized) grid."""

    case_id: str
    ct: torch.Tensor  # (N, 1, H, W) float32 in [-1, 1], the sampled slices only
    cond: torch.Tensor | None  # (N, K, H, W) float32, None for condition "none"
    slices: np.ndarray  # (N,) stored-grid z index of each sampled slice
    n_slices: int  # Z of the stored grid
    body: np.ndarray  # (Z, H, W) uint8 stored-grid body
    possible_dose: np.ndarray | None  # (Z, H, W) uint8 where the dataset has one
    attrs: dict  # the HDF5 attributes (original grid, crop box, resize factors, ...)


def dose_slices(body: np.ndarray, possible_dose: np.ndarray | None) -> np.ndarray:
    """z indices of the slices that can receive dose: body present (and possible-dose mask, if any)."""
    keep = body.reshape(body.shape[0], -1).any(axis=1)
    if possible_dose is not None:
        keep &= possible_dose.reshape(possible_dose.shape[0], -1).any(axis=1)
    return np.flatnonzero(keep)


def load_case_inputs(h5_path: Path, exp: ExperimentConfig, rois: list[str],
                     image_size: list[int] | None = None) -> CaseInputs:
    """Read and check one HDF5 case and build the normalised inputs of its dose-receiving slices."""
    h5_path = Path(h5_path)
    arrays, attrs = read_case_h5(h5_path)  # checks the schema version
    check_case(h5_path, attrs, list(arrays), exp.condition, rois, need_dose=False)
    key = condition_key(exp.condition)
    z, h, w = (int(v) for v in arrays["ct"].shape)
    if image_size is not None and [h, w] != [int(v) for v in image_size]:
        raise input_error(h5_path, f"slices of {h}x{w}", f"the {image_size[0]}x{image_size[1]} slices the model "
                          "was trained on", "preprocess the case with the training run's preprocess.size")
    exp.network.check_input_size(h, w)
    missing = [k for k in ("original_shape", "crop_box", "cropped_shape") if k not in attrs]
    if missing:
        raise input_error(h5_path, f"no attributes {missing}", "the grid attributes written by preprocessing",
                          "re-run the preprocess step for this case")
    body = (arrays["body"] > 0).astype(np.uint8)
    possible = arrays.get("possible_dose")
    possible = None if possible is None else (possible > 0).astype(np.uint8)
    slices = dose_slices(body, possible)

    ct = normalise_ct(arrays["ct"][slices].astype(np.float32), exp.train.ct_range)[:, None]  # (N, 1, H, W)
    cond = None
    if key is not None:
        stored = np.moveaxis(arrays[key][:, slices], 0, 1)  # (K, N, H, W) -> (N, K, H, W)
        cond = torch.from_numpy(np.ascontiguousarray(normalise_condition(stored, exp.condition)))
    case_id = str(attrs.get("case_id") or h5_path.name.removesuffix(".h5"))
    return CaseInputs(case_id, torch.from_numpy(np.ascontiguousarray(ct, dtype=np.float32)), cond,
                      slices, z, body, possible, attrs)

"""Training and validation slices: 2D axial slices of the per-case HDF5 files, normalised.

Slices are cut along axis 0 (z) of the stored (Z, H, W) arrays, the axis prediction
stacks its slice predictions along (the authors' code once cut training slices along
another axis than prediction used). One item is a dict of float32 tensors:

    ct   (1, H, W)  HU clipped to train.ct_range, mapped linearly to [-1, 1]
    dose (1, H, W)  Gy clipped to [0, train.dose_max_gy], mapped linearly to [-1, 1]
    cond (K, H, W)  condition channels in dataset.rois order (K = 0 for condition none):
                    mask 0/1; psdm in decimetres as stored; msdm in voxels / 100 (as the
                    paper trains); tsbdm as stored (already instance-normalised)
    body (1, H, W)  0/1

A missing ROI is an all-zero channel (as stored). Training items are keyed by
(slice index, stream position) from `dosediff.training.sampler.StepBatches`; the position
seeds the slice's augmentation, so augmentation is reproducible with any number of loader
workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dosediff.data.augment import apply_transform, draw_params, lr_permutation
from dosediff.data.h5 import H5Case
from dosediff.errors import input_error
from dosediff.experiment import ExperimentConfig

MSDM_SCALE = 0.01  # MSDM is stored in voxels; the paper divides it by 100 for training


def normalise_ct(hu: Any, ct_range: list[float]) -> Any:
    """HU -> [-1, 1] after clipping to ct_range (numpy array or tensor)."""
    lo, hi = ct_range
    return (hu.clip(lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0


def normalise_dose(gy: Any, dose_max_gy: float) -> Any:
    """Gy -> [-1, 1] after clipping to [0, dose_max_gy]."""
    return gy.clip(0.0, dose_max_gy) * (2.0 / dose_max_gy) - 1.0


def denormalise_dose(x: Any, dose_max_gy: float) -> Any:
    """[-1, 1] -> Gy (values outside [-1, 1] are clipped first)."""
    return (x.clip(-1.0, 1.0) + 1.0) * (dose_max_gy / 2.0)


def condition_scale(condition: str) -> float:
    """Factor from the stored representation to the network input."""
    return MSDM_SCALE if condition == "msdm" else 1.0


def normalise_condition(stored: np.ndarray, condition: str) -> np.ndarray:
    """Condition channels in stored units -> network input: masks as 0/1, distance maps
    times condition_scale (MSDM / 100, as the paper)."""
    if condition == "mask":
        return (stored > 0).astype(np.float32)
    return (stored * np.float32(condition_scale(condition))).astype(np.float32)


def normalisation(exp: ExperimentConfig) -> dict[str, Any]:
    """How inputs were mapped for this experiment (written to config.json for predict)."""
    return {
        "ct_range_hu": list(exp.train.ct_range),
        "dose_max_gy": exp.train.dose_max_gy,
        "ct": "clip to ct_range_hu, then linear to [-1, 1]",
        "dose": "clip to [0, dose_max_gy], then linear to [-1, 1]",
        "condition": exp.condition,
        "condition_scale": condition_scale(exp.condition),
        "mask_values": "0/1",
        "slice_axis": 0,
    }


def condition_key(condition: str) -> str | None:
    """The HDF5 dataset holding a condition's channels (None for condition none)."""
    return {"none": None, "mask": "masks"}.get(condition, condition)


def check_case(path: Path, attrs: dict, names: list[str], condition: str, rois: list[str],
               need_dose: bool = True) -> None:
    """One preprocessed case (its attributes and dataset names) fits the experiment: ROI
    channels in dataset.rois order, the condition's array present, a dose when training."""
    stored = [str(n) for n in attrs.get("roi_names", [])]
    if condition != "none" and stored != list(rois):
        raise input_error(path, f"ROI channels {stored}", f"dataset.rois {list(rois)} in that order",
                          "re-run preprocessing with the current dataset settings")
    key = condition_key(condition)
    if key is not None and key not in names:
        raise input_error(path, f"no {key!r} array for condition {condition!r}", f"an HDF5 file with {key!r}",
                          f"add {key} to preprocess.representations and re-run preprocessing")
    if need_dose and "dose" not in names:
        raise input_error(path, "no dose array", "a case with a planned dose for training",
                          "move the case out of the train/validation split")


class H5Slices:
    """Per-slice reads of one training case through `dosediff.data.h5.H5Case`, checked against the experiment."""

    def __init__(self, path: Path, condition: str, rois: list[str]):
        self.path, self.condition = Path(path), condition
        self._case = H5Case(self.path)  # checks the schema version
        check_case(self.path, self._case.attrs, self._case.names, condition, rois)
        self.shape = self._case.shape  # (Z, H, W)
        self.attrs = self._case.attrs  # grid and preprocessing attributes
        body = self._case.array("body")  # the body alone, not every array of every slice
        self.body_per_slice = np.asarray(body).reshape(self.shape[0], -1).any(axis=1)

    def read(self, z: int) -> dict[str, np.ndarray]:
        """Slice z: ct (H, W) HU, dose (H, W) Gy, body (H, W), cond (K, H, W) in stored units."""
        key = condition_key(self.condition)
        arrays = self._case.slice(z, ["ct", "dose", "body"] + ([key] if key else []))  # only what is used
        h, w = self.shape[1:]
        return {
            "ct": arrays["ct"].astype(np.float32),
            "dose": arrays["dose"].astype(np.float32),
            "body": arrays["body"].astype(np.float32),
            "cond": np.zeros((0, h, w), np.float32) if key is None else arrays[key].astype(np.float32),
        }


class SliceDataset(Dataset):
    """Normalised 2D slices of a list of HDF5 cases; augmented when `augment` is true."""

    def __init__(self, paths: list[Path], exp: ExperimentConfig, rois: list[str],
                 lr_pairs: list[list[str]] | None = None, augment: bool = False):
        if not paths:
            raise input_error("dataset", "no HDF5 cases", "at least one case in the split",
                              "check splits.json and the HDF5 folder")
        self.exp, self.augment = exp, augment
        self.cases = [H5Slices(p, exp.condition, rois) for p in paths]
        self.lr_swap = lr_permutation(list(rois), list(lr_pairs or []))
        self.index: list[tuple[int, int]] = []  # (case, z)
        for ci, case in enumerate(self.cases):
            keep = case.body_per_slice if exp.train.slices_with_body_only else np.ones(case.shape[0], bool)
            self.index.extend((ci, int(z)) for z in np.flatnonzero(keep))
        if not self.index:
            raise input_error("dataset", f"no slice with body voxels in {len(paths)} cases",
                              "cases whose body mask is not empty", "check the preprocessing's body threshold")
        sizes = {c.shape[1:] for c in self.cases}
        if len(sizes) != 1:
            raise input_error("dataset", f"slice sizes {sorted(sizes)}", "one in-plane size for all cases",
                              "preprocess all cases with the same preprocess.size")
        self.image_size = list(sizes.pop())
        self.kinds = {"ct": "intensity", "dose": "intensity", "body": "label",
                      "cond": "label" if exp.condition == "mask" else "distance"}

    def __len__(self) -> int:
        return len(self.index)

    def item(self, i: int) -> dict[str, torch.Tensor]:
        """Normalised, not augmented slice i."""
        ci, z = self.index[i]
        raw = self.cases[ci].read(z)
        t = self.exp.train
        cond = normalise_condition(raw["cond"], self.exp.condition)
        return {
            "ct": torch.from_numpy(normalise_ct(raw["ct"], t.ct_range)[None].astype(np.float32)),  # (1, H, W)
            "dose": torch.from_numpy(normalise_dose(raw["dose"], t.dose_max_gy)[None].astype(np.float32)),
            "cond": torch.from_numpy(np.ascontiguousarray(cond, dtype=np.float32)),  # (K, H, W)
            "body": torch.from_numpy((raw["body"] > 0).astype(np.float32)[None]),
        }

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """key: slice index, or (slice index, stream position) whose position seeds augmentation."""
        i, position = (key, None) if isinstance(key, (int, np.integer)) else key
        sample = self.item(int(i))
        if self.augment and position is not None:
            rng = np.random.default_rng([self.exp.train.seed, 1, int(position)])
            params = draw_params(rng, self.exp.train.augmentation)
            sample = apply_transform(sample, self.kinds, params, self.lr_swap)
        return sample

    def spread_subset(self, max_items: int) -> list[int]:
        """At most max_items slice indices spread evenly over the dataset (bounded validation)."""
        n = len(self.index)
        if max_items <= 0 or max_items >= n:
            return list(range(n))
        return sorted({int(round(v)) for v in np.linspace(0, n - 1, max_items)})

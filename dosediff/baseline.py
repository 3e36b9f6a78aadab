"""The trivial predictor a model must beat: the training set's mean dose per voxel position.

Each training dose on the stored (Z, H, W) grid is stretched along z to the test case's
number of slices (slices are matched by relative position in the body's z extent), the
doses are averaged, put back on the test case's CT grid and zeroed outside its body (and
possible-dose mask)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dosediff.data.h5 import read_case_h5
from dosediff.errors import input_error
from dosediff.names import output_paths
from dosediff.prediction.outputs import write_outputs
from dosediff.preprocess.resample import original_geometry, restore_to_original


def _stretch_z(volume: np.ndarray, n: int) -> np.ndarray:
    """Linear resampling along axis 0 to n slices, slice centres matched by relative position."""
    src = (np.arange(n) + 0.5) * volume.shape[0] / n - 0.5
    src = np.clip(src, 0, volume.shape[0] - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, volume.shape[0] - 1)
    w = (src - lo)[:, None, None]
    return (1 - w) * volume[lo] + w * volume[hi]


def mean_dose_prediction(train_h5: list[Path], case_h5: Path, out_path: Path) -> None:
    """Write the mean training dose for one case as NIfTI on its original CT grid (and the
    manifest beside it, as prediction does)."""
    started = time.perf_counter()
    if not train_h5:
        raise input_error("mean-dose baseline", "no training cases", "at least one training HDF5 file",
                          "check splits.json")
    arrays, attrs = read_case_h5(case_h5)
    z = arrays["body"].shape[0]
    total = np.zeros(arrays["body"].shape, dtype=np.float64)
    for path in train_h5:
        train, _ = read_case_h5(path)
        if "dose" not in train:
            raise input_error(path, "no dose", "training cases with their planned dose", "re-ingest with the RTDOSE")
        if train["dose"].shape[1:] != total.shape[1:]:
            raise input_error(path, f"in-plane size {train['dose'].shape[1:]}", f"{total.shape[1:]}",
                              "preprocess every case with the same preprocess.size")
        total += _stretch_z(train["dose"], z)
    mean = (total / len(train_h5)).astype(np.float32)
    mean *= arrays["body"] > 0
    if "possible_dose" in arrays:
        mean *= arrays["possible_dose"] > 0
    dose = restore_to_original(mean, attrs)  # (Z, Y, X) Gy on the CT grid
    manifest = {"predictor": "mean training dose", "training_cases": len(train_h5)}
    write_outputs(output_paths(out_path), original_geometry(attrs), dose, None, None,
                  "mean training dose", manifest, started)

"""Test-only conveniences: one CT series, RTDOSE or RTSTRUCT read by path with dosediff's readers
(the package reads a whole case folder at once: dosediff.io.dicom.read_dicom_case)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dosediff.io.dicom_ct import ct_from_datasets, read_dataset
from dosediff.io.rtdose import rtdose_from_dataset
from dosediff.io.rtstruct import rtstruct_from_dataset
from dosediff.volume import Geometry


def read_ct_series(files: list[Path], case_id: str) -> tuple[np.ndarray, Geometry, dict]:
    return ct_from_datasets([(Path(f), read_dataset(Path(f), case_id)) for f in files], case_id)


def read_rtdose(path: Path, case_id: str) -> tuple[np.ndarray, Geometry, dict]:
    return rtdose_from_dataset(read_dataset(Path(path), case_id), Path(path), case_id)


def read_rtstruct(path: Path, case_id: str) -> tuple[dict[str, list[np.ndarray]], str]:
    return rtstruct_from_dataset(read_dataset(Path(path), case_id), Path(path), case_id)

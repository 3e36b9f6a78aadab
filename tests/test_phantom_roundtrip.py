"""Phantom round trip: written DICOM-RT read back by the ingest gives the phantom's own
masks (Dice >= 0.99 per ROI) and dose (within 1 % of the prescription), with no sentinel."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dosediff.config import PhantomConfig
from dosediff.io.dicom import read_dicom_case
from dosediff.phantom import ROI_NAMES, SENTINELS, make_phantom, phantom_dataset_config, write_phantom_dicom


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.parametrize("index", [1, 2])
def test_ingest_reproduces_phantom(index, tmp_path, caplog):
    patient = make_phantom(index, PhantomConfig())
    folder = tmp_path / f"phantom_{index:03d}"
    write_phantom_dicom(patient, folder)
    dataset = phantom_dataset_config()
    with caplog.at_level(logging.INFO, logger="dosediff"):
        case = read_dicom_case(folder, folder.name, dataset)

    assert case.geometry.same_grid(patient.geometry, tol_mm=1e-4)
    assert np.array_equal(case.ct, patient.ct)
    assert list(case.masks) == ROI_NAMES
    dice = {name: _dice(case.masks[name], patient.masks[name]) for name in ROI_NAMES}
    assert min(dice.values()) >= 0.99, dice
    dose_err = float(np.abs(case.dose - patient.dose).max())
    assert dose_err <= 0.01 * patient.prescription_gy, dose_err
    print(f"\nphantom_{index:03d}: Dice {({k: round(float(v), 4) for k, v in dice.items()})}, "
          f"max |dose diff| {dose_err:.2e} Gy")

    # Nothing identifying travels with the case or into the log, and the body contour is
    # silently ignored (dataset.ignore_rois), not warned about.
    text = repr(case.meta) + case.case_id + caplog.text
    assert not [s for s in SENTINELS if s in text]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text

"""Synthetic DICOM-RT thorax patients: the embedded default dataset.

`make_phantom` draws a patient (CT, ROI contours and masks, a beam-model dose) that is
deterministic for (seed, index); `write_phantom_dicom` writes it as a CT series, RTSTRUCT,
RTDOSE and RTPLAN whose patient fields hold the SENTINELS strings.
"""

from __future__ import annotations

from pathlib import Path

from dosediff.config import PhantomConfig
from dosediff.phantom.dicom_writer import write_phantom_dicom
from dosediff.phantom.patient import (
    BODY_ROI_NAME, PHANTOM_ALIASES, PHANTOM_IGNORE_ROIS, PRESCRIPTION_GY, ROI_NAMES, SENTINELS, TARGETS,
    PhantomPatient, make_phantom, phantom_dataset_config,
)

__all__ = [
    "BODY_ROI_NAME", "PHANTOM_ALIASES", "PHANTOM_IGNORE_ROIS", "PRESCRIPTION_GY", "ROI_NAMES", "SENTINELS",
    "TARGETS", "PhantomPatient", "make_phantom", "phantom_dataset_config", "write_phantom_case",
    "write_phantom_dicom",
]


def write_phantom_case(out_dir: Path, case_id: str, index: int, cfg: PhantomConfig) -> None:
    """Draw phantom patient `index` and write it as DICOM-RT under `out_dir` (atomically)."""
    patient = make_phantom(index, cfg)
    patient.case_id = case_id
    write_phantom_dicom(patient, Path(out_dir))

"""Ingest stage: a patient's source folder (DICOM-RT or OpenKBP) -> the NIfTI Case folder."""

from __future__ import annotations

import logging
from pathlib import Path

from dosediff.config import DatasetConfig
from dosediff.errors import input_error
from dosediff.heap import keep_freed_memory
from dosediff.io.nifti import write_case
from dosediff.io.privacy import case_relative_paths
from dosediff.volume import Case

log = logging.getLogger("dosediff")


def read_source_case(folder: Path, case_id: str, dataset: DatasetConfig, require_dose: bool = True,
                     strict_dose: bool = True) -> Case:
    """Read one patient from its source folder with the reader for dataset.source; messages
    name files relative to the case (`<case>/CT/1.dcm`), never by the source folder. With
    strict_dose=False an RTDOSE of another frame of reference is ignored with a warning."""
    with case_relative_paths(folder, case_id):
        return _read_source_case(Path(folder), case_id, dataset, require_dose, strict_dose)


def _read_source_case(folder: Path, case_id: str, dataset: DatasetConfig, require_dose: bool,
                      strict_dose: bool) -> Case:
    if not folder.is_dir():
        raise input_error(folder, "folder not found", "one folder per patient under dataset.input_dir",
                          "check dataset.input_dir in your config", case=case_id)
    if dataset.source == "openkbp":
        from dosediff.io.openkbp import read_openkbp_case

        return read_openkbp_case(folder, case_id, dataset, require_dose=require_dose)
    from dosediff.io.dicom import read_dicom_case

    case = read_dicom_case(folder, case_id, dataset, strict_dose=strict_dose)
    if require_dose and case.dose is None:
        raise input_error(folder, "no RTDOSE file", "an RTDOSE with the planned dose for training data",
                          "export the plan's dose with the CT and RTSTRUCT, or run prediction only", case=case_id)
    return case


def ingest_case(folder: Path, case_id: str, dataset: DatasetConfig, out_dir: Path, require_dose: bool = True) -> None:
    """Read a source folder and write the Case folder (written only when complete)."""
    keep_freed_memory()  # dense 128^3 arrays per file: reuse the memory
    case = read_source_case(folder, case_id, dataset, require_dose=require_dose)
    write_case(case, out_dir)
    log.info(f"case {case_id}: ingested {len(case.masks)} ROIs on a {case.geometry.shape} grid -> {out_dir}")

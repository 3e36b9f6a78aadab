"""Prepare stage: ingest and preprocess one patient in one process.

The workflow's per-patient job. It writes the NIfTI case folder (predict and evaluate read
it) and preprocesses the Case from memory instead of reading that folder back: one process
start and one NIfTI read fewer per patient, and one cluster job instead of two. The HDF5 is
the one `dosediff ingest` then `dosediff preprocess` write (stored_case gives the Case as
the folder holds it).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from dosediff.config import DatasetConfig, PreprocessConfig
from dosediff.heap import keep_freed_memory
from dosediff.ingest import read_source_case
from dosediff.io.nifti import write_case
from dosediff.preprocess.pipeline import preprocess_case

log = logging.getLogger("dosediff")


def prepare_case(folder: Path, case_id: str, dataset: DatasetConfig, cfg: PreprocessConfig, case_dir: Path,
                 h5_path: Path) -> None:
    """Source folder -> NIfTI case folder and model-ready HDF5; both, or neither on failure."""
    keep_freed_memory()
    case = write_case(read_source_case(folder, case_id, dataset), case_dir)
    try:
        preprocess_case(case, dataset, cfg, h5_path)
    except BaseException:
        shutil.rmtree(case_dir, ignore_errors=True)  # written above by this call: no half-prepared case
        raise
    log.info(f"case {case_id}: {len(case.masks)} ROIs on a {case.geometry.shape} grid -> {case_dir}, {h5_path}")

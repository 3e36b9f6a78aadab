"""The preprocess stage: Case -> body mask, distance maps (original grid), crop/resize -> HDF5."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dosediff.config import DatasetConfig, PreprocessConfig
from dosediff.data.h5 import write_case_h5
from dosediff.errors import input_error
from dosediff.heap import keep_freed_memory
from dosediff.preprocess.body import body_mask
from dosediff.preprocess.distance import distance_maps
from dosediff.preprocess.resample import bounding_box, crop_resize, full_box, grid_attrs
from dosediff.volume import Case


@contextmanager
def _timed(timings: dict | None, name: str):
    start, cpu = time.perf_counter(), time.process_time()
    yield
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        timings[f"{name}_cpu"] = timings.get(f"{name}_cpu", 0.0) + time.process_time() - cpu


def roi_stack(case: Case, dataset: DatasetConfig) -> tuple[list[np.ndarray | None], list[str]]:
    """Masks in dataset.rois order (None where the case lacks the ROI) and the names present."""
    masks = [case.masks.get(name) for name in dataset.rois]
    present = [name for name, m in zip(dataset.rois, masks) if m is not None]
    return masks, present


def preprocess_case(case: Case, dataset: DatasetConfig, cfg: PreprocessConfig, out_path: Path,
                    timings: dict | None = None) -> None:
    """Body mask, distance maps on the original grid, crop to the body box and in-plane resize,
    then one HDF5 (data/h5.py schema). `timings`, when given, receives wall seconds per step
    (body, distances, crop_resize, write) and CPU seconds as `<step>_cpu`."""
    keep_freed_memory()  # one full-grid EDT and its temporaries per ROI: reuse the memory
    if not dataset.rois:
        raise input_error("setting dataset.rois", "an empty list", "the dataset's ROI names in channel order",
                          "list the ROIs in your config file", case=case.case_id)
    with _timed(timings, "body"):
        body = body_mask(case.ct, cfg.body_threshold_hu)  # (Z, Y, X) uint8
        box = bounding_box(body) if cfg.crop_to_body else full_box(case.geometry.shape)
    if box is None:
        raise input_error(f"case {case.case_id} CT", f"no voxel above {cfg.body_threshold_hu} HU",
                          "a CT showing the patient", "check the CT (HU rescale) or preprocess.body_threshold_hu",
                          case=case.case_id)
    masks, present = roi_stack(case, dataset)
    with _timed(timings, "distances"):
        dist = distance_maps(masks, case.geometry.spacing, list(cfg.representations), case.geometry.shape)

    size = (int(cfg.size[0]), int(cfg.size[1]))
    with _timed(timings, "crop_resize"):
        zeros = np.zeros(case.geometry.shape, dtype=np.uint8)
        mask_stack = np.stack([zeros if m is None else (m > 0).view(np.uint8) for m in masks])  # (K, Z, Y, X)
        arrays = {
            "ct": crop_resize(case.ct, box, size, "ct"),
            "body": crop_resize(body, box, size, "mask"),
            "masks": crop_resize(mask_stack, box, size, "mask"),
        }
        if case.dose is not None:
            arrays["dose"] = crop_resize(case.dose.astype(np.float32, copy=False), box, size, "linear")
        if case.possible_dose is not None:
            arrays["possible_dose"] = crop_resize(case.possible_dose, box, size, "mask")
        for rep, stack in dist.items():
            arrays[rep] = crop_resize(stack, box, size, "linear")
        del dist

    attrs = {
        "case_id": case.case_id,
        "source": str(case.meta.get("source", dataset.source)),
        "roi_names": list(dataset.rois),
        "rois_present": present,
        "representations": list(cfg.representations),
        "prescription_gy": float(case.prescription_gy if case.prescription_gy is not None else dataset.prescription_gy),
        "body_threshold_hu": float(cfg.body_threshold_hu),
        "crop_to_body": bool(cfg.crop_to_body),
        **grid_attrs(case.geometry, box, size),
    }
    with _timed(timings, "write"):
        write_case_h5(out_path, arrays, attrs, compression_level=cfg.compression_level)

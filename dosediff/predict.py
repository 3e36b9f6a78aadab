"""`dosediff predict`: trained weights + one preprocessed case -> dose on the original CT grid.

predict_case writes, beside out_path = <dir>/<case>.nii.gz: the dose (float32 Gy, NIfTI on
the ingest CT's geometry, 0 outside the body and the possible-dose mask), <case>_std.nii.gz
(per-voxel std over sample.n_samples > 1 samples), <case>_RTDOSE.dcm (cases ingested from
DICOM: references the source CT's study and frame of reference) and <case>.json, the
manifest (files, sampling settings, slices sampled, seconds), written last.

Only the slices that can receive dose are predicted (body present, and the possible-dose
mask where the dataset has one), in batches of sample.batch_size; the others are 0. What
the seed fixes is described in dosediff.prediction.sampling.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dosediff import __version__
from dosediff.checkpoint import load_model
from dosediff.config import from_dict
from dosediff.data.augment import lr_permutation
from dosediff.errors import input_error, log, warn
from dosediff.precision import sampling_bf16
from dosediff.experiment import ExperimentConfig, SampleConfig
from dosediff.io.nifti import read_case
from dosediff.prediction.inputs import CaseInputs, load_case_inputs
from dosediff.names import output_paths
from dosediff.prediction.outputs import check_same_case, dicom_refs, dose_region, to_original, write_outputs
from dosediff.prediction.sampling import DiffusionPredictor, SlicePredictor, sample_volume, slice_noise, slice_predictor
from dosediff.volume import Case


@dataclass
class LoadedModel:
    """A model folder loaded for prediction."""

    model_dir: Path
    model: nn.Module
    exp: ExperimentConfig
    info: dict[str, Any]
    device: torch.device


def resolve_device(device: str | None) -> torch.device:
    """The requested device, or CUDA when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise input_error("setting device", f"value {device!r}", "a device present on this machine",
                          "use cpu, or leave the device unset to pick CUDA when present")
    return dev


def resolve_sample(exp: ExperimentConfig, overrides: dict | None) -> SampleConfig:
    """The experiment's sample settings with `overrides` (keys of SampleConfig) applied and
    checked; one sample for the UNet baseline (its samples would all be equal)."""
    sample = exp.sample
    if overrides:
        sample = from_dict(SampleConfig, {**dataclasses.asdict(sample), **overrides}, f"experiments.{exp.name}.sample")
    if not exp.diffusion and sample.n_samples > 1:
        warn(f"setting experiments.{exp.name}.sample.n_samples", f"{sample.n_samples} for the one-step UNet "
             "baseline", "its samples would all be equal; predicting once, without a std map")
        sample = dataclasses.replace(sample, n_samples=1)
    return sample


def load_for_prediction(model_dir: Path, device: str | None = None) -> LoadedModel:
    """Load model.safetensors + config.json (no pickle) onto the device, in eval mode."""
    dev = resolve_device(device)
    model, exp, info = load_model(Path(model_dir), device=dev)
    if dev.type == "cpu":
        # Channels-last convolutions sample about 25 % faster on CPUs (same numbers to ~1e-6).
        model = model.to(memory_format=torch.channels_last)
    return LoadedModel(Path(model_dir), model, exp, info, dev)


def make_predictor(loaded: LoadedModel, sample: SampleConfig) -> SlicePredictor:
    """The model's slice predictor with `sample`'s settings; bf16 autocast as sample.bf16 says
    (null: where the device has bf16 units); the condition cache where the CT/condition
    encoders ignore the timestep (their features computed once per batch, reused at every step)."""
    net = loaded.exp.network
    return slice_predictor(loaded.model, loaded.exp, loaded.device, sample=sample,
                           bf16=sampling_bf16(sample.bf16, loaded.device),
                           use_cache=loaded.exp.diffusion and net.multiscale and not net.cond_encoders_use_time)


def predict_case(model_dir: Path, h5_path: Path, case_dir: Path, out_path: Path,
                 sample_overrides: dict | None = None, device: str | None = None,
                 threads: int | None = None) -> dict:
    """Predict one case with the weights in model_dir; write <case>.nii.gz (and std, RTDOSE)
    and the manifest <case>.json; return the manifest."""
    if threads:
        torch.set_num_threads(int(threads))
    started = time.perf_counter()
    loaded = load_for_prediction(model_dir, device)
    return run_case(loaded, Path(h5_path), Path(case_dir), Path(out_path), sample_overrides, started)


def run_case(loaded: LoadedModel, h5_path: Path, case_dir: Path, out_path: Path,
             sample_overrides: dict | None, started: float) -> dict:
    """predict_case with the model already loaded; `started` is when the timing began."""
    exp = loaded.exp
    sample = resolve_sample(exp, sample_overrides)
    paths = output_paths(out_path)
    case, inputs = read_inputs(loaded, h5_path, case_dir)
    predictor = make_predictor(loaded, sample)
    t0 = time.perf_counter()
    mean, std = sample_case(predictor, inputs, sample, loaded)  # (N, H, W) Gy
    sampling_seconds = time.perf_counter() - t0
    region = dose_region(case, inputs.attrs, inputs.body, inputs.possible_dose)  # (Zo, Yo, Xo) bool
    dose = restore(mean, inputs, region, exp.train.dose_max_gy)
    std_map = restore(std, inputs, region, None) if std is not None else None
    manifest = case_manifest(loaded, inputs, case, sample, predictor, float(dose.max()), sampling_seconds)
    write_outputs(paths, case.geometry, dose, std_map, dicom_refs(case), f"dosediff {exp.name}"[:64],
                  manifest, started)
    log.info(f"case {inputs.case_id}: {exp.name} predicted {len(inputs.slices)}/{inputs.n_slices} slices in "
             f"{manifest['seconds']:.1f} s -> {paths['dose']}")
    return manifest


def read_inputs(loaded: LoadedModel, h5_path: Path, case_dir: Path) -> tuple[Case, CaseInputs]:
    """The ingested case (original grid) and its preprocessed network inputs, checked to pair."""
    case = read_case(case_dir)
    inputs = load_case_inputs(h5_path, loaded.exp, loaded.info["rois"], loaded.info.get("image_size"))
    check_same_case(case, inputs.attrs, h5_path, case_dir)
    if case.case_id != inputs.case_id:
        warn(h5_path, f"case id {inputs.case_id!r} while {case_dir} holds {case.case_id!r}",
             "the grids agree, so predicting; check the file pairing")
    if not len(inputs.slices):
        warn(h5_path, "no slice with body (and possible-dose) voxels", "the prediction is 0 Gy everywhere",
             case=inputs.case_id)
    return case, inputs


def sample_case(predictor: SlicePredictor, inputs: CaseInputs, sample: SampleConfig, loaded: LoadedModel
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean and std (Gy, (N, H, W)) of the sampled slices, noise per slice from sample.seed."""
    hw = tuple(inputs.ct.shape[2:])
    info = loaded.info
    return sample_volume(predictor, inputs.ct, inputs.cond, inputs.slices,
                         lambda s, slices, draws: slice_noise(sample.seed, inputs.case_id, s, slices, draws, hw),
                         n_samples=sample.n_samples, tta_flip=sample.tta_flip,
                         lr_swap=lr_permutation(list(info["rois"]), list(info.get("lr_pairs", []))),
                         batch_size=sample.batch_size, dose_max_gy=loaded.exp.train.dose_max_gy,
                         device=loaded.device)


def restore(values: np.ndarray, inputs: CaseInputs, region: np.ndarray, max_gy: float | None) -> np.ndarray:
    """Sampled slices (N, H, W) back on the original CT grid; slices that cannot receive dose stay 0 Gy."""
    full = np.zeros((inputs.n_slices, *inputs.ct.shape[2:]), np.float32)
    full[inputs.slices] = values
    return to_original(full, inputs.attrs, region, max_gy)


def case_manifest(loaded: LoadedModel, inputs: CaseInputs, case: Case, sample: SampleConfig,
                  predictor: SlicePredictor, max_gy: float, sampling_seconds: float) -> dict[str, Any]:
    """The manifest's settings and counts (write_outputs adds the files and the total seconds)."""
    exp = loaded.exp
    return {
        "case_id": inputs.case_id,
        "experiment": exp.name,
        "model": exp.model,
        "model_step": loaded.info.get("step"),
        "sample": {k: v for k, v in dataclasses.asdict(sample).items() if k != "seed"},  # the seed once, below
        "seed": sample.seed,
        "noise": "per slice, from (seed, case id, sample index, stored-grid z)",
        "condition_cache": isinstance(predictor, DiffusionPredictor) and predictor.use_cache,
        "slices_sampled": int(len(inputs.slices)),
        "slices_total": int(inputs.n_slices),
        "forward_passes": forward_passes(len(inputs.slices), sample, exp.diffusion),
        "device": str(loaded.device),
        "precision": "bf16 autocast" if predictor.bf16 else "fp32",
        "threads": torch.get_num_threads(),
        "max_predicted_gy": round(max_gy, 4),
        "grid": case.geometry.to_dict(),
        "sampling_seconds": round(sampling_seconds, 3),
        "dosediff_version": __version__,
    }


def forward_passes(n_slices: int, sample: SampleConfig, diffusion: bool) -> int:
    """Network calls (batches x steps x samples x views) of one case."""
    batches = -(-n_slices // sample.batch_size)
    per_batch = (sample.steps if diffusion else 1) * sample.n_samples * (2 if sample.tta_flip else 1)
    return batches * per_batch

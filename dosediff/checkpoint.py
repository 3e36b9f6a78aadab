"""Checkpoints (resume) and final weights (predict), both loadable without executing pickle.

checkpoint.pt: one `torch.save` dict of tensors, numbers, strings, lists and dicts only, so
`torch.load(weights_only=True)` reads it: model, EMA, optimizer and lr scheduler state
dicts, RNG states (python, numpy, torch, CUDA; the noise uses torch's) as tensors/lists, the
step, and the resolved config as JSON text. Written to a temporary file then renamed
(os.replace), so a run killed while saving leaves the previous checkpoint intact.

Final weights: model.safetensors (EMA weights, what predict uses), model_raw.safetensors
(the optimised weights) and config.json: everything prediction needs, so a model folder
copied to another machine predicts new patients alone (dosediff/model_spec.py reads it).
config.json holds the resolved ExperimentConfig (network, training normalisation, sampling
defaults), the training dataset's ROI names, targets, required ROIs, pairs and prescription,
the preprocessing the training data had (in-plane size, representations, body threshold,
crop), the noise schedule, the step and the software version. Format 1 folders (before the
dataset, preprocess and schedule entries) and folders whose experiment has no schedule
section still load, with the schedule they were trained with (LEGACY_SCHEDULE).
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dosediff.atomic import atomic_file
from dosediff.config import from_dict
from dosediff.errors import input_error
from dosediff.experiment import ExperimentConfig, saved_experiment

FORMAT_VERSION = 1  # checkpoint.pt and the safetensors metadata
CONFIG_FORMAT = 2  # config.json: 2 added dataset, preprocess and schedule
READABLE_CONFIG_FORMATS = (1, 2)
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
RAW_WEIGHTS = "model_raw.safetensors"
CONFIG = "config.json"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically, on disk before the rename makes it current."""
    with atomic_file(path, fsync=True) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with the safe (weights-only) unpickler."""
    try:
        state = torch.load(Path(path), map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and what to do
        raise input_error(path, f"unreadable checkpoint ({type(err).__name__}: {err})",
                          "a checkpoint written by `dosediff train`",
                          "delete the file to start the experiment afresh") from err
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise input_error(path, f"format_version {state.get('format_version') if isinstance(state, dict) else None}",
                          f"format_version {FORMAT_VERSION}", "delete the file to start the experiment afresh")
    return state


def capture_rng() -> dict[str, Any]:
    """RNG states of python, numpy, torch (and CUDA), as tensors/lists."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of capture_rng."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def model_info(exp: ExperimentConfig, rois: list[str], lr_pairs: list[list[str]], step: int,
               image_size: list[int], dataset: dict[str, Any] | None = None,
               preprocess: dict[str, Any] | None = None) -> dict[str, Any]:
    """What config.json holds besides the experiment: data layout, normalisation, progress.

    dataset: the training dataset's settings that new patients need (targets, required ROIs,
    aliases, prescription); preprocess: the training HDF5s' preprocessing (preprocess_info)."""
    from dosediff.data.dataset import normalisation

    from dosediff import __version__

    keep = ("name", "source", "targets", "required_rois", "aliases", "ignore_rois", "prescription_gy")
    return {
        "format_version": CONFIG_FORMAT,
        "dosediff_version": __version__,
        "rois": list(rois),
        "lr_pairs": [list(p) for p in lr_pairs],
        "normalisation": normalisation(exp),
        "image_size": list(image_size),
        "dataset": {k: v for k, v in (dataset or {}).items() if k in keep},
        "preprocess": dict(preprocess or {}, size=list(image_size)),
        "schedule": dataclasses.asdict(exp.schedule),  # also in the experiment; kept for older readers
        "step": int(step),
    }


def preprocess_info(h5_attrs: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing settings recorded in a training HDF5's attributes."""
    return {k: h5_attrs[k] for k in ("representations", "body_threshold_hu", "crop_to_body") if k in h5_attrs}


def save_final(out_dir: Path, model: nn.Module, ema: nn.Module, exp: ExperimentConfig,
               info: dict[str, Any]) -> Path:
    """Write model.safetensors (EMA), model_raw.safetensors and config.json; return the weights path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, module in ((WEIGHTS, ema), (RAW_WEIGHTS, model)):
        tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        with atomic_file(out_dir / name) as tmp:
            save_file(tensors, str(tmp), metadata={"format_version": str(FORMAT_VERSION), "experiment": exp.name})
    with atomic_file(out_dir / CONFIG) as tmp:
        tmp.write_text(json.dumps({"experiment": exp.to_dict(), **info}, indent=2))
    return out_dir / WEIGHTS


def read_config(model_dir: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """config.json -> (ExperimentConfig, the rest: rois, lr_pairs, normalisation, image_size, step)."""
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise input_error(path, "no such file", "config.json written by `dosediff train` beside the weights",
                          "point at the experiment's model folder, or train the experiment first")
    data = _read_json(path, "experiment")
    version = data.get("format_version")
    if version not in READABLE_CONFIG_FORMATS or not isinstance(data.get("experiment"), dict):
        from dosediff import __version__

        raise input_error(path, f"format_version {version!r} (written by dosediff "
                          f"{data.get('dosediff_version', 'unknown')})",
                          f"a format this dosediff {__version__} reads: {list(READABLE_CONFIG_FORMATS)}",
                          "predict with the dosediff version that trained the model, or retrain it with this one")
    exp_data, where = data.pop("experiment"), f"{path}: experiment"
    if "schedule" not in exp_data and isinstance(data.get("schedule"), dict):
        exp_data = {**exp_data, "schedule": data["schedule"]}  # format 2 before the experiment's own section
    exp = from_dict(ExperimentConfig, saved_experiment(exp_data, where), where)
    return exp, data


def _read_json(path: Path, *keys: str) -> dict[str, Any]:
    """A JSON object with the given keys, or a clean error naming the file (damaged, truncated)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise input_error(path.name, f"unreadable JSON ({type(err).__name__})", "the file written by dosediff",
                          "restore the file from the run that wrote it, or rerun that step") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise input_error(path.name, f"missing keys {missing}", "the file written by dosediff",
                          "restore the file from the run that wrote it, or rerun that step")
    return data


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """safetensors weights, or a clean error for a truncated or non-safetensors file."""
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError and OSError
        raise input_error(path.name, f"not a readable safetensors file ({type(err).__name__})",
                          "model.safetensors written by `dosediff train`",
                          "copy the weights again or retrain the experiment") from None


def load_model(model_dir: Path, raw: bool = False, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, ExperimentConfig, dict[str, Any]]:
    """Build the network from config.json and load the EMA (or raw) safetensors weights, in eval mode.

    Returns (model, experiment config, info) where info has rois, lr_pairs, normalisation,
    image_size and step."""
    from dosediff.models.factory import build_model

    model_dir = Path(model_dir)
    exp, info = read_config(model_dir)
    path = model_dir / (RAW_WEIGHTS if raw else WEIGHTS)
    if not path.is_file():
        raise input_error(path, "no such file", "weights written by `dosediff train`",
                          "train the experiment first (the run writes them when it finishes)")
    model = build_model(exp.network)
    tensors = _read_weights(path)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise input_error(path, f"weights that do not fit the network (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})", "the weights of the config.json beside it",
                          "keep model.safetensors and config.json of the same run together")
    return model.to(device).eval(), exp, info

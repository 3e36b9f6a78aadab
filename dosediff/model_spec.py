"""What a trained model folder says about the data it needs: the settings a prediction-only
run (new patients, a model trained elsewhere) takes from the model, not from the user.

The model fixes the ROI names and their channel order, targets, required ROIs, left-right
pairs and prescription (its training dataset's), and the preprocessing (in-plane size,
distance representations, body threshold, crop). The user's dataset section says only where
the patients are and how their ROI names map to the model's (aliases, ignore_rois,
pseudonyms, exclude_cases).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dosediff.checkpoint import read_config
from dosediff.config import REPRESENTATIONS, DatasetConfig, PreprocessConfig, from_dict
from dosediff.errors import input_error, warn
from dosediff.experiment import ExperimentConfig

# Dataset keys the model decides in a prediction-only run (given by the user, they must agree).
MODEL_DATASET_KEYS = ("rois", "targets", "required_rois", "lr_pairs", "prescription_gy")


@dataclass(frozen=True)
class ModelSpec:
    """A model folder's prediction settings."""

    model_dir: Path
    exp: ExperimentConfig
    info: dict[str, Any]
    dataset: DatasetConfig  # the training dataset's ROIs, targets, required ROIs, prescription
    preprocess: PreprocessConfig

    @property
    def label(self) -> str:
        return f"model {self.model_dir} (experiment {self.exp.name}, dosediff {self.info.get('dosediff_version')})"


def read_model_spec(model_dir: Path) -> ModelSpec:
    """Read config.json of a model folder; format-1 folders get the defaults they were trained with."""
    model_dir = Path(model_dir)
    exp, info = read_config(model_dir)
    where = model_dir / "config.json"
    rois = list(info.get("rois") or [])
    data = dict(info.get("dataset") or {})
    if "dataset" not in info:
        warn(where, "a format-1 model folder (no dataset or preprocess entries)",
             "assuming no required ROIs, no targets and the default preprocessing except size and representation")
    data.update(rois=rois, lr_pairs=info.get("lr_pairs", []))
    data.setdefault("name", "model")
    data.setdefault("source", "dicom")
    dataset = from_dict(DatasetConfig, data, f"{where}: dataset")
    prep = dict(info.get("preprocess") or {})
    prep.setdefault("size", info.get("image_size") or [96, 96])
    prep.setdefault("representations", [exp.condition] if exp.condition in REPRESENTATIONS else [])
    preprocess = from_dict(PreprocessConfig, prep, f"{where}: preprocess")
    return ModelSpec(model_dir, exp, info, dataset, preprocess)


def patient_dataset(spec: ModelSpec, user: dict | None) -> DatasetConfig:
    """DatasetConfig for new patients: the model's ROIs and targets, the user's folders and names.

    Aliases and ignore_rois of the model's training data and of the user's section are both used."""
    user = dict(user or {})
    model = spec.dataset
    for key in MODEL_DATASET_KEYS:
        if key in user and user[key] != getattr(model, key):
            raise input_error(f"setting dataset.{key}", f"value {user[key]!r}, but {spec.label} was trained with "
                              f"{getattr(model, key)!r}", "the model's value (prediction-only runs take it from "
                              "the model folder)", f"remove dataset.{key} from the prediction config")
    unknown = [k for k in user.get("aliases", {}) if k not in model.rois]
    if unknown:
        raise input_error("setting dataset.aliases", f"ROIs {unknown} are not ROIs of {spec.label}",
                          f"aliases keyed by the model's ROI names {model.rois}",
                          "key each alias list by the model's name for the ROI")
    aliases = {roi: list(dict.fromkeys([*model.aliases.get(roi, []), *user.get("aliases", {}).get(roi, [])]))
               for roi in model.rois}
    data = {k: v for k, v in user.items() if k not in MODEL_DATASET_KEYS}
    data.update({k: getattr(model, k) for k in MODEL_DATASET_KEYS},
                aliases={k: v for k, v in aliases.items() if v},
                ignore_rois=list(dict.fromkeys([*model.ignore_rois, *user.get("ignore_rois", [])])))
    return from_dict(DatasetConfig, data, "dataset")

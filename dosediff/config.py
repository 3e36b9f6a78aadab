"""Typed settings built from the workflow's YAML config.

The defaults live here, once. The workflow's JSON schema checks structure and types;
these dataclasses check values and say which setting is wrong and how to fix it.
Rules hand a stage its section of the config as JSON (`--settings`); by hand, a YAML
file path works too.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dosediff.errors import input_error
from dosediff.names import check_name, check_names, check_pseudonyms, variant_name

T = TypeVar("T")
# Distance maps preprocessing can store; the experiment conditions of the same names read them.
REPRESENTATIONS = ("tsbdm", "msdm", "psdm")


@dataclass(frozen=True)
class DatasetConfig:
    """What the data are and how ROI names map to the dataset's canonical names."""

    name: str = "phantom"
    source: str = "phantom"  # phantom | dicom | openkbp
    input_dir: str = ""  # patient folders; empty: results/<name>/dicom (source_dir)
    rois: list[str] = field(default_factory=list)  # canonical names, channel order
    targets: dict[str, float] = field(default_factory=dict)  # target ROI -> its dose level (Gy)
    required_rois: list[str] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)  # canonical -> other names
    ignore_rois: list[str] = field(default_factory=list)  # names in RTSTRUCTs to skip silently
    lr_pairs: list[list[str]] = field(default_factory=list)  # swapped by left-right flips
    prescription_gy: float = 60.0
    exclude_cases: list[str] = field(default_factory=list)
    pseudonyms: dict[str, str] = field(default_factory=dict)  # patient folder name -> case id in outputs

    @property
    def source_dir(self) -> str:  # the workflow writes the phantom's DICOM there when unset
        return self.input_dir or f"results/{self.name}/dicom"

    def __post_init__(self) -> None:
        if self.source not in ("phantom", "dicom", "openkbp"):
            raise input_error("setting dataset.source", f"value {self.source!r}", "phantom, dicom or openkbp",
                              "set dataset.source in your config file to one of these")
        check_name(self.name, "dataset.name")
        check_names(self.rois, "dataset.rois")  # ROI names become file names (roi/<ROI>.nii.gz)
        check_pseudonyms(self.pseudonyms)
        unknown_aliased = [n for n in self.aliases if n not in self.rois]
        if unknown_aliased:
            raise input_error("setting dataset.aliases", f"aliases of {unknown_aliased}, not in dataset.rois",
                              f"aliases of names from {self.rois}", "add the ROI to dataset.rois or fix the spelling")
        for group, names in [("targets", list(self.targets)), ("required_rois", self.required_rois),
                             ("lr_pairs", [n for p in self.lr_pairs for n in p])]:
            unknown = [n for n in names if n not in self.rois]
            if unknown:
                raise input_error(f"setting dataset.{group}", f"ROI names {unknown} are not in dataset.rois",
                                  f"names from {self.rois}", "add them to dataset.rois or correct the spelling")
        if any(len(p) != 2 for p in self.lr_pairs):
            raise input_error("setting dataset.lr_pairs", f"value {self.lr_pairs}",
                              "a list of [left, right] pairs", "give exactly two ROI names per pair")
        if self.prescription_gy <= 0:
            raise input_error("setting dataset.prescription_gy", f"value {self.prescription_gy}",
                              "a positive dose in Gy", "set the prescription dose")


@dataclass(frozen=True)
class PhantomConfig:
    """Synthetic DICOM-RT patients (the embedded default dataset)."""

    n_cases: int = 10
    seed: int = 0
    shape: list[int] = field(default_factory=lambda: [40, 96, 96])  # slices, rows, columns
    spacing: list[float] = field(default_factory=lambda: [5.0, 3.5, 3.5])  # mm: slice, row, column
    n_beams: int = 7

    def __post_init__(self) -> None:
        if self.n_cases < 1:
            raise input_error("setting phantom.n_cases", f"value {self.n_cases}", "at least 1",
                              "set phantom.n_cases to the number of synthetic patients wanted")


# gzip level of the HDF5 cases: 1 with byte shuffle writes about 1.5x faster than level 4 and
# the file grows only ~7% (OpenKBP pt_1: 14.3 vs 13.4 MB; the authors' .npy take 136 MB).
DEFAULT_GZIP_LEVEL = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """Body mask, crop, in-plane resize and the distance representations to store."""

    body_threshold_hu: float = -500.0
    crop_to_body: bool = True
    size: list[int] = field(default_factory=lambda: [96, 96])  # rows, columns after resize
    representations: list[str] = field(default_factory=lambda: ["psdm"])
    compression_level: int = DEFAULT_GZIP_LEVEL

    def __post_init__(self) -> None:
        bad = [r for r in self.representations if r not in REPRESENTATIONS]
        if bad:
            raise input_error("setting preprocess.representations", f"values {bad}",
                              f"names from {sorted(REPRESENTATIONS)} (masks are always stored)",
                              "remove or correct them")
        if len(self.size) != 2 or min(self.size) < 8 or max(self.size) > 2048:  # bounded before allocation
            raise input_error("setting preprocess.size", f"value {self.size}",
                              "[rows, columns], each from 8 to 2048", "set preprocess.size, e.g. [128, 128]")


@dataclass(frozen=True)
class SplitConfig:
    """Train/validation/test split by patient (used where the dataset has none of its own)."""

    seed: int = 0
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
    # The split that is predicted and evaluated; auto: test when it has patients, else validation
    # (OpenKBP's public sample has no test patients; the full dataset has 100).
    evaluate_on: str = "auto"

    def __post_init__(self) -> None:
        if self.evaluate_on not in ("auto", "train", "validation", "test"):
            raise input_error("setting split.evaluate_on", f"value {self.evaluate_on!r}",
                              "auto, train, validation or test", "set split.evaluate_on, e.g. auto")
        if len(self.fractions) != 3 or abs(sum(self.fractions) - 1.0) > 1e-6 or min(self.fractions) < 0:
            raise input_error("setting split.fractions", f"value {self.fractions}",
                              "three non-negative fractions (train, validation, test) summing to 1",
                              "set split.fractions, e.g. [0.7, 0.1, 0.2]")

    def evaluation_split(self, splits: dict[str, list[str]]) -> str:
        """The split to predict and evaluate, given the case lists of each split."""
        name = self.evaluate_on
        if name == "auto":
            name = "test" if splits.get("test") else "validation"
        if not splits.get(name):
            raise input_error("setting split.evaluate_on", f"value {self.evaluate_on!r} selects the {name} split, "
                              "which has no patients", "a split with at least one patient",
                              "add patients to that split, or set split.evaluate_on to another split")
        return name


@dataclass(frozen=True)
class StudyConfig:
    """A sampling study on one experiment's test cases: DDIM steps (paper Fig. 4) or seeds
    (paper Table 4). An empty experiment switches the study off."""

    experiment: str = ""
    steps: list[int] = field(default_factory=lambda: [8])
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if not self.steps or min(self.steps) < 1 or not self.seeds:
            raise input_error("setting report study", f"steps {self.steps}, seeds {self.seeds}",
                              "non-empty lists, steps at least 1", "e.g. steps [1, 2, 4, 8], seeds [0]")

    def variants(self) -> list[str]:
        """Prediction-set names, e.g. steps8_seed0."""
        return [variant_name(s, k) for s in self.steps for k in self.seeds]


@dataclass(frozen=True)
class ReportConfig:
    """Config section `report`: which experiments form which table, labels, studies."""

    tables: dict[str, list[str]] = field(default_factory=dict)  # name -> experiments (Table 1/2 layout)
    per_roi: list[str] = field(default_factory=list)  # experiments of the per-ROI table (Table 3)
    labels: dict[str, str] = field(default_factory=dict)
    steps_study: StudyConfig = field(default_factory=StudyConfig)
    seed_study: StudyConfig = field(default_factory=StudyConfig)

    def dvh_models(self, experiments: list[str]) -> list[str]:
        """The models overlaid in each case's DVH figure: the first table's, else `experiments`."""
        return list(next(iter(self.tables.values()), experiments))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against a type hint, building nested dataclasses; raise a clear error."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, where)
            except ValueError:
                pass
        raise input_error(f"setting {where}", f"value {value!r}", str(tp), "correct the value in your config file")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise input_error(f"setting {where}", f"value {value!r}", "a list", "write it as a YAML list")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise input_error(f"setting {where}", f"value {value!r}", "a mapping", "write it as a YAML mapping")
        _, varg = typing.get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, varg, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise input_error(f"setting {where}", f"value {value!r} of type {type(value).__name__}",
                      getattr(tp, "__name__", str(tp)), "correct the value in your config file")


def from_dict(cls: type[T], data: dict | None, where: str) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys by name."""
    data = data or {}
    if not isinstance(data, dict):
        raise input_error(f"setting {where}", f"value {data!r}", "a mapping", "write it as a YAML mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise input_error(f"setting {where}", f"unknown keys {unknown}", f"keys from {sorted(names)}",
                          "remove or correct the misspelled keys")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_settings(text_or_path: str) -> dict:
    """`--settings` value: inline JSON (what rules pass) or a path to a YAML/JSON file."""
    stripped = text_or_path.strip()
    if stripped.startswith("{"):
        return json.loads(stripped)
    path = Path(text_or_path)
    if not path.is_file():
        raise input_error(f"--settings {text_or_path}", "no such file and not inline JSON",
                          "inline JSON or a YAML config file", "pass the config file path, e.g. config/config.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise input_error(path, "the file is not a YAML mapping", "a config mapping", "check the file")
    return data


def section(settings: dict, cls: type[T], key: str) -> T:
    """Build the dataclass for one top-level section of the settings."""
    return from_dict(cls, settings.get(key), key)

"""Typed settings of one experiment: `experiments: {<name>: {...}}` in the workflow config.

An experiment is one row of the paper's tables: which network (MMFNet or the UNet
baseline), diffusion on/off, which condition input, the ablation switches, the network
size, the noise schedule, and the training and sampling settings. Defaults are the paper's /
authors' values (paper section 2 and the authors' code); the embedded config overrides the
sizes for CPU work.

The network section takes `ModelConfig` fields except the four derived here (arch from
`model`, cond_channels from the condition and the dataset's ROIs, multiscale and
fusion_former from the switches), so a resolved ExperimentConfig always carries a
consistent ModelConfig.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dosediff.config import REPRESENTATIONS, DatasetConfig, from_dict, section
from dosediff.diffusion.ddim import SPACINGS
from dosediff.diffusion.parametrization import PREDICTIONS
from dosediff.diffusion.schedule import LEGACY_SCHEDULE, ScheduleConfig
from dosediff.errors import input_error
from dosediff.models.config import ARCHS, ModelConfig
from dosediff.names import check_name

CONDITIONS = ("none", "mask", *REPRESENTATIONS)
DERIVED_NETWORK_KEYS = ("arch", "cond_channels", "multiscale", "fusion_former")


def _bad(where: str, value: Any, expected: str, fix: str) -> None:
    raise input_error(f"setting {where}", f"value {value!r}", expected, fix)


@dataclass(frozen=True)
class AugmentConfig:
    """Online augmentation of training slices (paper: random flip, rotation and zoom).

    Every channel gets the same transform. flip_prob: left-right flip (the x axis, last
    array axis; swaps dataset.lr_pairs channels); flip_ap_prob: anterior-posterior flip
    (rows), off by default because it makes anatomy no patient has. affine_prob: chance
    of a rotation/zoom; rotation_deg: maximum absolute angle; zoom_range: [min, max]
    scale (> 1 magnifies).
    """

    enabled: bool = True
    flip_prob: float = 0.5
    flip_ap_prob: float = 0.0
    affine_prob: float = 0.5
    rotation_deg: float = 10.0
    zoom_range: list[float] = field(default_factory=lambda: [0.9, 1.1])

    def __post_init__(self) -> None:
        for name in ("flip_prob", "flip_ap_prob", "affine_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _bad(f"train.augmentation.{name}", getattr(self, name), "a probability in [0, 1]",
                     "e.g. 0.5, or 0 to switch it off")
        if not 0.0 <= self.rotation_deg <= 180.0:
            _bad("train.augmentation.rotation_deg", self.rotation_deg, "degrees in [0, 180]", "e.g. 10")
        z = self.zoom_range
        if len(z) != 2 or not 0.0 < z[0] <= z[1]:
            _bad("train.augmentation.zoom_range", z, "[min, max] with 0 < min <= max", "e.g. [0.9, 1.1]")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, validation and data settings.

    steps: optimizer steps (paper: one million).
    batch_size: slices per process and step (under torchrun: batch_size x processes).
    lr, weight_decay: AdamW (paper/authors: 1e-4, 1e-4).
    lr_decay_at, lr_decay_factor: lr x factor from round(at x steps) on (authors: 0.7, 0.1).
    grad_clip: maximum global gradient norm (0 = off; authors: 1.0).
    ema_decay: EMA of the weights, used for validation and the final weights; with a
        warm-up, min(ema_decay, (1 + n) / (10 + n)) at step n.
    checkpoint_every, log_every: steps between checkpoints / CSV rows.
    validate_every: steps between validations (0 = never) on at most val_max_slices
        slices of the validation split.
    seed: initial weights, slice order, augmentation, noise.
    ct_range (HU), dose_max_gy: CT and dose are clipped and mapped linearly to [-1, 1]
        (paper: [-1000, 1500] HU, 75 Gy; the authors use 80 Gy on OpenKBP).
    slices_with_body_only: skip slices without body voxels.
    regression_loss: l1 or mse, the UNet baseline's loss (the paper does not say; l1 is
        the usual dose-prediction choice).
    num_workers: DataLoader worker processes.
    max_minutes: a wall-clock budget of training (minutes over all runs, resumptions included;
        0 = none): training ends with final weights at the first step past it, or at `steps`.
        The lr decay still follows `steps`; a resumed run may raise the budget.
    bf16: bfloat16 autocast; null = on for CUDA devices with bf16 units, fp32 on the CPU
        (true there is 1.5x faster on CPUs with AVX512-BF16, but trained worse: README).
    """

    steps: int = 1_000_000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_decay_at: float = 0.7
    lr_decay_factor: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 5000
    validate_every: int = 5000
    val_max_slices: int = 64
    log_every: int = 50
    seed: int = 0
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    ct_range: list[float] = field(default_factory=lambda: [-1000.0, 1500.0])
    dose_max_gy: float = 75.0
    slices_with_body_only: bool = True
    regression_loss: str = "l1"
    num_workers: int = 0
    max_minutes: float = 0.0
    bf16: bool | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                _bad(f"train.{name}", getattr(self, name), "a positive integer", f"set train.{name}")
        for name in ("validate_every", "val_max_slices", "num_workers", "seed"):
            if getattr(self, name) < 0:
                _bad(f"train.{name}", getattr(self, name), "a non-negative integer", f"set train.{name}")
        if self.max_minutes < 0:
            _bad("train.max_minutes", self.max_minutes, "minutes >= 0 (0 = no time budget)", "e.g. 60")
        if self.lr <= 0 or self.weight_decay < 0:
            _bad("train.lr / train.weight_decay", (self.lr, self.weight_decay),
                 "lr > 0 and weight_decay >= 0", "e.g. lr 1e-4, weight_decay 1e-4")
        if not 0.0 < self.lr_decay_at <= 1.0 or not 0.0 < self.lr_decay_factor <= 1.0:
            _bad("train.lr_decay_at / train.lr_decay_factor", (self.lr_decay_at, self.lr_decay_factor),
                 "fractions in (0, 1]", "e.g. 0.7 and 0.1 (authors); 1.0 and 1.0 for no decay")
        if self.grad_clip < 0:
            _bad("train.grad_clip", self.grad_clip, "a non-negative norm (0 = off)", "e.g. 1.0")
        if not 0.0 <= self.ema_decay < 1.0:
            _bad("train.ema_decay", self.ema_decay, "a decay in [0, 1)", "e.g. 0.999 (0 copies the weights)")
        if len(self.ct_range) != 2 or self.ct_range[0] >= self.ct_range[1]:
            _bad("train.ct_range", self.ct_range, "[low, high] HU with low < high", "e.g. [-1000, 1500]")
        if self.dose_max_gy <= 0:
            _bad("train.dose_max_gy", self.dose_max_gy, "a positive dose in Gy", "e.g. 75 (80 for OpenKBP)")
        if self.regression_loss not in ("l1", "mse"):
            _bad("train.regression_loss", self.regression_loss, "l1 or mse", "set it to l1")


@dataclass(frozen=True)
class SampleConfig:
    """DDIM sampling (paper: S = 8, eta = 0), used by validation and prediction.

    n_samples > 1 gives a mean and a per-voxel standard deviation; tta_flip averages with
    the left-right flipped prediction; batch_size: slices per forward pass; bf16: bfloat16
    autocast (null = on where the device has bf16 units: CUDA, or CPUs with AVX512-BF16 or
    AMX, where it is 1.8x faster and moved the default's predictions by 0.06 Gy on average).
    """

    steps: int = 8
    eta: float = 0.0
    n_samples: int = 1
    tta_flip: bool = False
    seed: int = 0
    batch_size: int = 16
    bf16: bool | None = None
    spacing: str = "leading"  # DDIM timesteps: leading (diffusers, ADM's ddimS) or trailing (ends at T)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            _bad("sample.steps", self.steps, "DDIM steps in [1, 1000]", "e.g. 8 (paper)")
        if self.eta < 0:
            _bad("sample.eta", self.eta, "eta >= 0 (0 = deterministic DDIM)", "e.g. 0")
        if self.spacing not in SPACINGS:
            _bad("sample.spacing", self.spacing, "leading or trailing",
                 "leading (default, ADM/diffusers) or trailing (the sub-sequence ends at T, as the paper writes)")
        for name in ("n_samples", "batch_size"):
            if getattr(self, name) < 1:
                _bad(f"sample.{name}", getattr(self, name), "a positive integer", f"set sample.{name}")


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: network kind and switches, the resolved network, schedule, train and sample.

    parametrization: what the diffusion network outputs, epsilon (paper) or v; the YAML
    key is `prediction` (or `parametrization`)."""

    name: str = "dosediff"
    model: str = "mmfnet"
    diffusion: bool = True
    parametrization: str = "epsilon"
    condition: str = "psdm"
    multiscale: bool = True
    fusion_former: bool = True
    network: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        where = f"experiments.{self.name}"
        if self.model not in ARCHS:
            _bad(f"{where}.model", self.model, f"one of {list(ARCHS)}",
                 "mmfnet for the diffusion model, unet for the one-step baseline")
        if self.parametrization not in PREDICTIONS:
            _bad(f"{where}.prediction", self.parametrization, f"one of {list(PREDICTIONS)}",
                 "epsilon (the paper) or v (learns faster in short trainings)")
        if self.condition not in CONDITIONS:
            _bad(f"{where}.condition", self.condition, f"one of {list(CONDITIONS)}",
                 "psdm for DoseDiff; none for CT only")
        if self.diffusion != (self.model == "mmfnet"):
            _bad(f"{where}.diffusion", self.diffusion,
                 "true for model mmfnet (a noise predictor) and false for model unet (a regressor)",
                 "remove the diffusion key; it follows from model")
        if self.diffusion and self.sample.steps > self.schedule.num_timesteps:
            _bad(f"{where}.sample.steps", self.sample.steps, f"at most schedule.num_timesteps "
                 f"({self.schedule.num_timesteps})", "fewer DDIM steps, e.g. 8 (paper)")
        n = self.network
        derived = {"arch": self.model, "multiscale": self.multiscale, "fusion_former": self.fusion_former}
        wrong = {k: getattr(n, k) for k, v in derived.items() if getattr(n, k) != v}
        if wrong or (self.condition == "none") != (n.cond_channels == 0):
            raise input_error(f"setting {where}.network", f"values {wrong or {'cond_channels': n.cond_channels}}",
                              f"the values derived from the experiment ({derived}, cond_channels 0 iff condition "
                              "none)", "build the experiment with ExperimentConfig.from_settings; set these keys "
                              "on the experiment")

    def to_dict(self) -> dict:
        """Plain JSON-able mapping; `from_dict(ExperimentConfig, d, ...)` rebuilds it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_settings(cls, settings: dict, name: str, dataset: DatasetConfig | None = None) -> ExperimentConfig:
        """Resolve experiment `name` of the workflow config (needs the dataset section's ROIs;
        `dataset`: that section, when the caller has built it already)."""
        experiments = settings.get("experiments") or {}
        if not isinstance(experiments, dict) or name not in experiments:
            raise input_error("setting experiments", f"no experiment named {name!r}",
                              f"one of {sorted(experiments) if isinstance(experiments, dict) else []}",
                              "add it under experiments: in your config file or correct the name")
        data = dict(experiments[name] or {})
        dataset = dataset or section(settings, DatasetConfig, "dataset")
        return cls.from_mapping(data, name, rois=dataset.rois)

    @classmethod
    def from_mapping(cls, data: dict, name: str, rois: list[str]) -> ExperimentConfig:
        """Build from one experiment's mapping; `rois` gives the condition's channel count."""
        check_name(name, "experiments (experiment name)")  # it becomes a folder and a shell word
        where = f"experiments.{name}"
        if not isinstance(data, dict):
            _bad(where, data, "a mapping", "write the experiment as a YAML mapping")
        data = renamed_keys(data, where)
        network = dict(data.pop("network", None) or {})
        given = sorted(k for k in DERIVED_NETWORK_KEYS if k in network)
        if given:
            raise input_error(f"setting {where}.network", f"keys {given}",
                              f"network keys other than {list(DERIVED_NETWORK_KEYS)}",
                              f"set model / condition / multiscale / fusion_former on {where} itself")
        model = data.get("model", cls.model)
        data.setdefault("diffusion", model == "mmfnet")
        condition = data.get("condition", cls.condition)
        if condition != "none" and not rois:
            raise input_error(f"setting {where}.condition", f"value {condition!r} with no dataset.rois",
                              "ROI names in dataset.rois for the condition channels",
                              "list the ROIs under dataset.rois, or use condition: none")
        # ModelConfig checks them (fusion_former needs multiscale)
        network.update(arch=model, cond_channels=0 if condition == "none" else len(rois),
                       multiscale=data.get("multiscale", cls.multiscale),
                       fusion_former=data.get("fusion_former", cls.fusion_former))
        data["network"] = network
        data["name"] = name
        return from_dict(cls, data, where)


def renamed_keys(data: dict, where: str) -> dict:
    """An experiment mapping with `prediction` (the YAML key, and config.json before the
    rename) as `parametrization`."""
    data = dict(data)
    if "prediction" in data:
        if "parametrization" in data:
            _bad(f"{where}.prediction", data["prediction"], "prediction or parametrization, not both",
                 "keep one of the two keys")
        data["parametrization"] = data.pop("prediction")
    return data


def saved_experiment(data: dict, where: str) -> dict:
    """An experiment mapping saved by any dosediff (config.json, checkpoint.pt) in today's keys:
    one saved before the schedule section gets the schedule it was trained with."""
    data = renamed_keys(data, where)
    data.setdefault("schedule", dataclasses.asdict(LEGACY_SCHEDULE))
    return data

"""Slice predictions of one volume: DDIM (or one pass), N samples, flip TTA, mean and std.

Seeding: every sampled slice z gets its own noise, drawn on the CPU from a generator seeded
by (sample.seed, case id, sample index, z). So the same seed gives the same noise whatever
the batch size, the device or the set of slices sampled, and the prediction is identical
run to run on one machine (different batch sizes agree up to floating-point round-off of
the batched kernels). ddim_sample gets these per-slice draws as `noise` (its own generator
would draw one tensor per batch, which would tie the result to the batch layout).

Flip TTA: the left-right flipped inputs (x axis, paired ROI channels swapped through the
training augmentation's apply_transform) are denoised from the flipped noise of the same
draw, the result flipped back and averaged with the unflipped one; for a flip-equivariant
network the two agree exactly. With n_samples > 1, each sample is that average and the
prediction is the mean over samples, the uncertainty their per-voxel standard deviation
(sample std, ddof = 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from dosediff.data.augment import AugmentParams, apply_transform
from dosediff.data.dataset import denormalise_dose
from dosediff.diffusion.ddim import ddim_sample
from dosediff.diffusion.parametrization import to_epsilon
from dosediff.experiment import ExperimentConfig, SampleConfig
from dosediff.heap import keep_freed_memory
from dosediff.precision import bf16_autocast


class SlicePredictor(Protocol):
    """Normalised slices -> normalised dose. `prepare` runs once per batch (and flip),
    `predict` once per sample; noise_draws is the number of (B, 1, H, W) normal draws a
    sample needs (0 = deterministic)."""

    noise_draws: int

    def prepare(self, ct: torch.Tensor, cond: torch.Tensor | None) -> Any: ...

    def predict(self, prepared: Any, noise: torch.Tensor | None) -> torch.Tensor: ...


class DiffusionPredictor:
    """DDIM with `steps` and `eta` over MMFNet; with `use_cache` the CT/condition encoders run
    once per batch (model.encode_condition) and their features serve every step and sample."""

    def __init__(self, model: nn.Module, alphas_cumprod: torch.Tensor, steps: int, eta: float,
                 use_cache: bool, device: torch.device, bf16: bool = False, prediction: str = "epsilon",
                 spacing: str = "leading"):
        self.model, self.steps, self.eta, self.use_cache = model, steps, eta, use_cache
        self.prediction = prediction
        self.abar = alphas_cumprod.double().cpu()  # (T,) read as Python floats by ddim_step
        self.spacing = spacing
        self.device, self.bf16 = device, bf16
        self.noise_draws = 1 + (steps if eta > 0 else 0)  # y_T, then one per step when eta > 0

    @torch.no_grad()
    def prepare(self, ct: torch.Tensor, cond: torch.Tensor | None) -> Any:
        if not self.use_cache:
            return ct, cond
        with bf16_autocast(self.device, self.bf16):
            return self.model.encode_condition(ct, cond)

    @torch.no_grad()
    def predict(self, prepared: Any, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            raise ValueError("DiffusionPredictor.predict needs noise (B, noise_draws, 1, H, W)")

        def eps_fn(y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with bf16_autocast(self.device, self.bf16):
                if self.use_cache:
                    out = self.model(y_t, t, cache=prepared)  # (B, 1, H, W)
                else:
                    out = self.model(y_t, t, prepared[0], prepared[1])
            return to_epsilon(self.prediction, out.float(), y_t, t, self.abar)  # v-networks: to noise

        x = ddim_sample(eps_fn, tuple(noise[:, 0].shape), self.abar, self.steps, self.eta, device=noise.device,
                        spacing=self.spacing, noise=noise)
        return x.clamp(-1.0, 1.0)  # y_0 (B, 1, H, W); the last step returns the clipped estimate


def slice_predictor(model: nn.Module, exp: ExperimentConfig, device: torch.device, *,
                    sample: SampleConfig | None = None, bf16: bool = False, use_cache: bool = False
                    ) -> SlicePredictor:
    """The predictor of an experiment's network: DDIM under its noise schedule and
    parametrization with `sample`'s steps, eta and spacing (default: exp.sample), or one
    pass of the UNet baseline."""
    if device.type == "cpu":
        keep_freed_memory()
    if not exp.diffusion:
        return RegressionPredictor(model, device, bf16)
    s = sample or exp.sample
    return DiffusionPredictor(model, exp.schedule.alphas_cumprod("cpu"), s.steps, s.eta, use_cache=use_cache,
                              device=device, bf16=bf16, prediction=exp.parametrization, spacing=s.spacing)


class RegressionPredictor:
    """The UNet baseline: one forward pass per batch, no noise."""

    noise_draws = 0

    def __init__(self, model: nn.Module, device: torch.device, bf16: bool = False):
        self.model, self.device, self.bf16 = model, device, bf16

    def prepare(self, ct: torch.Tensor, cond: torch.Tensor | None) -> Any:
        return ct, cond

    @torch.no_grad()
    def predict(self, prepared: Any, noise: torch.Tensor | None) -> torch.Tensor:
        with bf16_autocast(self.device, self.bf16):
            out = self.model(*prepared)  # (B, 1, H, W)
        return out.float().clamp(-1.0, 1.0)


def case_key(case_id: str) -> int:
    """A stable 64-bit number for a case id (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little")


def slice_seed(seed: int, case_id: str, sample: int, z: int) -> int:
    """Seed of the noise of slice z in sample `sample` of a case."""
    state = np.random.SeedSequence([int(seed), case_key(case_id), int(sample), int(z)]).generate_state(1, np.uint64)
    return int(state[0] >> 1)


def slice_noise(seed: int, case_id: str, sample: int, slices: np.ndarray, draws: int,
                hw: tuple[int, int]) -> torch.Tensor:
    """(B, draws, 1, H, W) standard normal noise, each slice from its own CPU generator."""
    out = torch.empty((len(slices), draws, 1, *hw), dtype=torch.float32)
    for i, z in enumerate(slices):
        g = torch.Generator().manual_seed(slice_seed(seed, case_id, sample, int(z)))
        out[i] = torch.randn((draws, 1, *hw), generator=g)
    return out


def flip_inputs(ct: torch.Tensor, cond: torch.Tensor | None, lr_swap: list[int]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Left-right flip of (N, 1, H, W) CT and (N, K, H, W) condition slices, paired ROI
    channels swapped: the training augmentation's flip, slice by slice."""
    params = AugmentParams(flip_lr=True)
    kinds = {"ct": "intensity", "cond": "distance"}  # kinds only matter for rotation/zoom
    cts, conds = [], []
    for i in range(ct.shape[0]):
        item = {"ct": ct[i]} if cond is None else {"ct": ct[i], "cond": cond[i]}
        out = apply_transform(item, kinds, params, lr_swap)
        cts.append(out["ct"])
        if cond is not None:
            conds.append(out["cond"])
    return torch.stack(cts), (torch.stack(conds) if cond is not None else None)


NoiseFn = Callable[[int, np.ndarray, int], torch.Tensor]  # (sample, slice indices, draws) -> noise


def sample_volume(predictor: SlicePredictor, ct: torch.Tensor, cond: torch.Tensor | None, slices: np.ndarray,
                  noise_fn: NoiseFn, *, n_samples: int, tta_flip: bool, lr_swap: list[int], batch_size: int,
                  dose_max_gy: float, device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict N slices: ct (N, 1, H, W), cond (N, K, H, W) or None, slices (N,) their z.

    Returns (mean, std) in Gy, float32 (N, H, W); std is None when n_samples is 1."""
    n, _, h, w = ct.shape
    mean = np.zeros((n, h, w), np.float32)
    std = np.zeros((n, h, w), np.float32) if n_samples > 1 else None
    views = [(False, ct, cond)]
    if tta_flip:
        views.append((True, *flip_inputs(ct, cond, lr_swap)))
    for start in range(0, n, batch_size):
        part = slice(start, min(start + batch_size, n))
        samples = torch.zeros((n_samples, part.stop - start, h, w), dtype=torch.float32)  # Gy
        for flipped, ct_v, cond_v in views:
            prepared = predictor.prepare(ct_v[part].to(device), None if cond_v is None else cond_v[part].to(device))
            for s in range(n_samples):
                noise = noise_fn(s, slices[part], predictor.noise_draws) if predictor.noise_draws else None
                if noise is not None and flipped:
                    noise = noise.flip(-1)  # the same draw, mirrored with the inputs
                x0 = predictor.predict(prepared, None if noise is None else noise.to(device))  # (B, 1, H, W)
                gy = denormalise_dose(x0.float().cpu(), dose_max_gy)[:, 0]  # (B, H, W) Gy
                samples[s] += (gy.flip(-1) if flipped else gy) / len(views)
        mean[part] = samples.mean(0).numpy()
        if std is not None:
            std[part] = samples.std(0, correction=1).numpy()
    return mean, std

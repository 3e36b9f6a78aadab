"""Validation: mean absolute dose error in Gy inside the body on a bounded set of slices."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from dosediff.data.dataset import SliceDataset, denormalise_dose
from dosediff.experiment import ExperimentConfig
from dosediff.prediction.sampling import slice_predictor


@torch.no_grad()
def validate(model: nn.Module, dataset: SliceDataset, exp: ExperimentConfig,
             device: torch.device, use_bf16: bool) -> float:
    """MAE in Gy over all body voxels of at most train.val_max_slices validation slices.

    `model` is the EMA network; diffusion experiments sample with prediction's DDIM
    (sample.steps, sample.eta) from noise drawn by a generator seeded with sample.seed, so
    successive validations differ only through the weights."""
    model.eval()
    s = exp.sample
    predictor = slice_predictor(model, exp, device, bf16=use_bf16)
    subset = Subset(dataset, dataset.spread_subset(exp.train.val_max_slices))
    loader = DataLoader(subset, batch_size=s.batch_size, shuffle=False, num_workers=0)
    generator = torch.Generator().manual_seed(s.seed)  # CPU: the same noise on any device
    abs_sum, voxels = 0.0, 0.0
    dmax = exp.train.dose_max_gy
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        cond = batch["cond"] if batch["cond"].shape[1] else None
        draws = [torch.randn(batch["ct"].shape, generator=generator) for _ in range(predictor.noise_draws)]
        noise = torch.stack(draws, dim=1).to(device) if draws else None  # (B, draws, 1, H, W)
        pred = predictor.predict(predictor.prepare(batch["ct"], cond), noise)  # (B, 1, H, W) in [-1, 1]
        err = (denormalise_dose(pred, dmax) - denormalise_dose(batch["dose"], dmax)).abs()  # Gy
        abs_sum += float((err * batch["body"]).sum())
        voxels += float(batch["body"].sum())
    return abs_sum / max(voxels, 1.0)

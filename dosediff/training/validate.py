"""Validation: mean absolute dose error in Gy inside the body on a bounded set of slices."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from dosediff.data.dataset import SliceDataset, denormalise_dose
from dosediff.experiment import ExperimentConfig
from dosediff.training.objective import predict_normalised


@torch.no_grad()
def validate(model: nn.Module, dataset: SliceDataset, exp: ExperimentConfig, schedule: object | None,
             device: torch.device, use_bf16: bool) -> float:
    """MAE in Gy over all body voxels of at most train.val_max_slices validation slices.

    `model` is the EMA network; diffusion experiments sample with DDIM (sample.steps,
    sample.eta) from a generator seeded with sample.seed, so successive validations differ
    only through the weights."""
    model.eval()
    subset = Subset(dataset, dataset.spread_subset(exp.train.val_max_slices))
    loader = DataLoader(subset, batch_size=exp.sample.batch_size, shuffle=False, num_workers=0)
    generator = torch.Generator().manual_seed(exp.sample.seed)  # CPU: the same noise on any device
    abs_sum, voxels = 0.0, 0.0
    dmax = exp.train.dose_max_gy
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred = predict_normalised(model, batch, exp, schedule, generator)  # (B, 1, H, W)
        err = (denormalise_dose(pred, dmax) - denormalise_dose(batch["dose"], dmax)).abs()  # Gy
        abs_sum += float((err * batch["body"]).sum())
        voxels += float(batch["body"].sum())
    return abs_sum / max(voxels, 1.0)

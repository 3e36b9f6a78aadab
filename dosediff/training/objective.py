"""What the network is trained on, for both model kinds.

Diffusion (MMFNet): the MSE of dosediff.diffusion.loss (on epsilon or v, the experiment's
parametrization) on the normalised dose, under the experiment's noise schedule.
UNet baseline: one forward pass regressing the normalised dose, trained with L1 (default; the usual dose-prediction
objective, the paper does not name one) or MSE over the whole slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dosediff.experiment import ExperimentConfig


def _cond(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    cond = batch["cond"]
    return cond if cond.shape[1] else None


def training_loss(model: nn.Module, batch: dict[str, torch.Tensor], exp: ExperimentConfig,
                  schedule: object | None) -> torch.Tensor:
    """Scalar loss of one batch (tensors already on the model's device)."""
    ct, cond, dose = batch["ct"], _cond(batch), batch["dose"]  # (B,1,H,W), (B,K,H,W)|None, (B,1,H,W)
    if exp.diffusion:
        from dosediff.diffusion.loss import diffusion_loss

        def eps_fn(y_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model(y_t, t, ct, cond)

        # t and noise from the global RNG, which train_step seeds per step
        return diffusion_loss(eps_fn, dose, schedule, prediction=exp.parametrization)
    loss = F.l1_loss if exp.train.regression_loss == "l1" else F.mse_loss
    return loss(model(ct, cond).float(), dose)  # the network's output: (B, 1, H, W) normalised dose


def make_schedule(exp: ExperimentConfig, device: torch.device) -> object | None:
    """The noise schedule of a diffusion experiment (None for the regressor)."""
    return exp.schedule.alphas_cumprod(device) if exp.diffusion else None

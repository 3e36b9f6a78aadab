"""Training objective (paper Eq. 6): epsilon prediction with the mean squared error.

The paper writes an unspecified norm; the authors' code averages the squared
error over the whole slice, as here. The network is passed in as `model_fn(y_t, t) -> eps`,
a closure over the conditions (CT, distance maps), so this module never imports a model.
"""

from __future__ import annotations

import torch

from dosediff.diffusion.ddim import ModelFn

from dosediff.diffusion.parametrization import training_target
from dosediff.diffusion.schedule import q_sample


def diffusion_loss(model_fn: ModelFn, x0: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   prediction: str = "epsilon") -> torch.Tensor:
    """MSE between true and predicted noise (or v, see parametrization.py); t ~ U{0..T-1} and
    noise ~ N(0, I) unless given.

    x0: clean dose (B, 1, H, W) in [-1, 1]; returns a scalar. A generator (on any device;
    the draws are moved to x0's) makes them reproducible."""
    b, device = x0.shape[0], x0.device
    draw_on = generator.device if generator is not None else device  # then moved to x0's device
    if t is None:
        t = torch.randint(0, alphas_cumprod.shape[0], (b,), device=draw_on, generator=generator).to(device)
    if noise is None:
        noise = torch.randn(x0.shape, device=draw_on, dtype=x0.dtype, generator=generator).to(device)
    y_t = q_sample(x0, t, noise, alphas_cumprod)  # (B, 1, H, W)
    target = training_target(prediction, x0, noise, t, alphas_cumprod)  # noise (paper) or v
    out = model_fn(y_t, t)
    return torch.mean((out.float() - target.float()) ** 2)

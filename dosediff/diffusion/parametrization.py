"""What the network outputs: the paper's noise (epsilon) or the velocity v.

The paper trains an epsilon predictor (Eq. 6). With v = sqrt(abar) eps - sqrt(1 - abar) x0
(Salimans and Ho, 2022) the loss weighs high noise levels more, where an epsilon network
must be very precise for its x0 estimate to be usable; short trainings (the CPU default)
learn much faster with it. Either way the sampler sees epsilon, so DDIM is unchanged.
"""

from __future__ import annotations

import torch

from dosediff.diffusion.schedule import noise_coefficients

PREDICTIONS = ("epsilon", "v")


def training_target(prediction: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                    alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """What the network is regressed onto: the noise, or v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    if prediction == "epsilon":
        return noise
    a, s = noise_coefficients(t, alphas_cumprod, x0)
    return a * noise - s * x0


def to_epsilon(prediction: str, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int,
               alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The network's output as a noise estimate: eps = sqrt(1 - abar) x_t + sqrt(abar) v."""
    if prediction == "epsilon":
        return output
    a, s = noise_coefficients(t, alphas_cumprod, x_t)
    return s * x_t + a * output

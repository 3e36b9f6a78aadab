"""Noise schedule and forward noising (paper Eqs. 1-2).

Timesteps are 0-based here, t in [0, T-1], as in ADM and diffusers; the paper's 1-based
step t+1 is our t. alphas_cumprod[t] is the paper's alpha-bar_{t+1}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dosediff.errors import input_error


@dataclass(frozen=True)
class ScheduleConfig:
    """The noise schedule an experiment trains and samples with (`schedule:` of an
    experiment, saved in config.json): linear betas from beta_start to beta_end over
    num_timesteps steps (DDPM; the authors' code: T 1000, 1e-4 to 0.02)."""

    kind: str = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if self.kind != "linear":
            raise input_error("setting schedule.kind", f"value {self.kind!r}", "linear", "set schedule.kind: linear")
        if self.num_timesteps < 2 or not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise input_error("setting schedule", f"T={self.num_timesteps}, betas {self.beta_start}..{self.beta_end}",
                              "T >= 2 and 0 < beta_start < beta_end < 1", "use T 1000, betas 1e-4..0.02")

    def alphas_cumprod(self, device: torch.device | str | None = None) -> torch.Tensor:
        """alphas_cumprod, float64 (T,) on `device`: the one place a schedule is built."""
        return linear_schedule(self.num_timesteps, self.beta_start, self.beta_end, device)


# What every model saved before the schedule section was trained with, spelled out so that
# changing ScheduleConfig's defaults cannot change those old models.
LEGACY_SCHEDULE = ScheduleConfig(kind="linear", num_timesteps=1000, beta_start=1e-4, beta_end=0.02)


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear variance schedule (DDPM; the authors' code), float64 (T,).

    The paper's sentence on it is garbled: betas rise linearly from 1e-4 to 0.02."""
    ScheduleConfig("linear", num_timesteps, beta_start, beta_end)  # checks the values
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """alpha-bar_t = prod_{s<=t} (1 - beta_s) of the linear schedule, float64 (T,) on `device`."""
    return torch.cumprod(1.0 - linear_betas(num_timesteps, beta_start, beta_end), dim=0).to(device)


def noise_coefficients(t: torch.Tensor | int, alphas_cumprod: torch.Tensor, like: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(abar_t) and sqrt(1 - abar_t) in like's dtype, shaped to broadcast over like (B, ...)
    for t (B,), or 0-d for an int t."""
    abar = alphas_cumprod.to(like.device)[torch.as_tensor(t, device=like.device)]  # (B,) or (), float64
    shape = (-1,) + (1,) * (like.dim() - 1) if abar.dim() else ()
    a = abar.sqrt().to(like.dtype).reshape(shape)
    s = (1.0 - abar).sqrt().to(like.dtype).reshape(shape)
    return a, s


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Sample q(y_t | y_0) (Eq. 2): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.

    x0, noise (B, ...); t (B,) 0-based integer timesteps; returns (B, ...) in x0's dtype."""
    a, s = noise_coefficients(t, alphas_cumprod, x0)
    return a * x0 + s * noise

"""DDIM sampling (paper Eq. 7; Song et al. 2021): timesteps, a pure step function, a seeded loop.

The network enters only as `model_fn(y_t, t) -> eps`, a closure over the conditions. For a
model whose CT/condition encoders ignore t, build the closure over a condition cache, e.g.
`cache = model.encode_condition(ct, cond); fn = lambda y, t: model(y, t, cache=cache)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dosediff.errors import input_error

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SPACINGS = ("leading", "trailing")


def ddim_timesteps(steps: int, num_train_timesteps: int = 1000, spacing: str = "leading") -> list[int]:
    """The S timesteps visited, descending, 0-based (t in [0, T-1]; the paper's tau_i = t + 1).

    "leading" (diffusers' timestep_spacing="leading", steps_offset 0; also ADM's "ddimS"
    respacing that the authors' code uses): step = T // S, t = (S-1)*step, ..., step, 0.
    For S = 8: 875, 750, ..., 0, i.e. tau = {1, 126, ..., 876} in the paper's 1-based terms,
    so it starts at 876 rather than at T as the paper's "sub-sequence of [1..T] with
    tau_S = T" says. "trailing" follows the paper: t = round(T - i*T/S) - 1, i.e.
    999, 874, ..., 124 for S = 8 (tau = {125, ..., 1000}, ending at T).
    """
    if not 1 <= steps <= num_train_timesteps:
        raise input_error("setting sampling steps", f"value {steps}", f"1 to {num_train_timesteps}",
                          "set the number of DDIM steps, e.g. 8 (the paper)")
    if spacing == "leading":
        step = num_train_timesteps // steps
        return [i * step for i in reversed(range(steps))]
    if spacing == "trailing":
        ts = torch.arange(num_train_timesteps, 0, -num_train_timesteps / steps, dtype=torch.float64).round() - 1
        return [int(v) for v in ts]
    raise input_error("setting sampling spacing", f"value {spacing!r}", f"one of {list(SPACINGS)}",
                      "use leading (authors' code, diffusers default) or trailing (ends at T)")


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, alphas_cumprod: torch.Tensor,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip_x0: bool = True,
              eps_from_clipped_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update from timestep t to t_prev (< t; -1 = the final step to y_0).

    x_t, eps (B, ...); alphas_cumprod (T,); noise (B, ...) needed when eta > 0.
    Returns (x_prev, x0_pred). Pure: no randomness, no state.

    clip_x0 clamps the y_0 estimate to [-1, 1] (the authors; diffusers clip_sample).
    eps_from_clipped_x0 then re-derives eps from the clipped y_0 as the authors' ADM code
    does (diffusers use_clipped_model_output=True); False uses the raw eps (diffusers' default).
    """
    if not -1 <= t_prev < t < alphas_cumprod.shape[0]:
        raise input_error("ddim_step timesteps", f"t={t}, t_prev={t_prev}",
                          f"-1 <= t_prev < t < {alphas_cumprod.shape[0]}", "pass timesteps from ddim_timesteps")
    a_t = float(alphas_cumprod[t])
    # Final step: alpha-bar_prev = 1, i.e. y_0 itself (diffusers set_alpha_to_one=True; ADM's
    # alphas_cumprod_prev[0] = 1).
    a_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    eps = eps.to(x_t.dtype)

    # y_0 estimate (below Eq. 7): (y_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    x0 = (x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        if eps_from_clipped_x0:
            eps = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)

    # DDIM's sigma (Song et al. Eq. 16): eta * sqrt((1 - abar_prev)/(1 - abar_t)) * sqrt(1 - abar_t/abar_prev).
    # eta = 0 (the authors) is deterministic. The paper's Eq. 7 writes the variance as
    # (1 - alpha_t) and its direction coefficient garbled; we follow DDIM.
    sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t)) * math.sqrt(1.0 - a_t / a_prev)

    # Eq. 7 mean: sqrt(abar_prev) y0 + sqrt(1 - abar_prev - sigma^2) eps ("direction to y_t").
    x_prev = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
    if eta > 0:
        if noise is None:
            raise input_error("ddim_step noise", "None with eta > 0", "a standard normal tensor like x_t",
                              "pass noise (ddim_sample draws it from its generator)")
        x_prev = x_prev + sigma * noise.to(x_t.dtype)
    return x_prev, x0


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Drawn on the CPU, then moved: the same seed gives the same numbers on any device.
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def ddim_sample(model_fn: ModelFn, shape: tuple[int, ...], alphas_cumprod: torch.Tensor, steps: int = 8,
                eta: float = 0.0, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                clip_x0: bool = True, eps_from_clipped_x0: bool = True, spacing: str = "leading",
                noise: torch.Tensor | None = None) -> torch.Tensor:
    """Run S DDIM steps from y_T ~ N(0, I) and return y_0 (shape `shape`, on `device`), float32.

    model_fn(y_t (B, ...), t (B,) long) -> eps. Random numbers come from `generator` (a CPU
    torch.Generator; None = the global RNG) in this order: y_T, then, when eta > 0, one
    noise tensor per step. `noise` (B, draws, ...) gives those draws instead, in that order.
    steps, eta and spacing are taken as SampleConfig checked them.
    """
    if generator is not None and generator.device.type != "cpu":
        raise input_error("ddim_sample generator", f"on {generator.device}", "a CPU torch.Generator",
                          "create it with torch.Generator().manual_seed(seed); noise is moved to the device")
    device = torch.device(device)
    timesteps = ddim_timesteps(steps, alphas_cumprod.shape[0], spacing)

    def draw(j: int) -> torch.Tensor:  # the j-th draw: y_T, then one per step
        return _randn(shape, generator, device) if noise is None else noise[:, j].to(device, torch.float32)

    x = draw(0)  # y_T (B, ...)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        eps = model_fn(x, torch.full((shape[0],), t, dtype=torch.long, device=device))
        step_noise = draw(1 + i) if eta > 0 else None
        x, _ = ddim_step(x, eps, t, t_prev, alphas_cumprod, eta, step_noise, clip_x0, eps_from_clipped_x0)
    return x

"""Exponential moving average of the weights (used for validation and the final weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` that `update_ema` moves towards it."""
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameters and floating buffers alike.

    The parameters in one multi-tensor lerp (one kernel launch per group, not per tensor)."""
    torch._foreach_lerp_(list(ema.parameters()), [m.detach() for m in model.parameters()], 1.0 - decay)
    for e, m in zip(ema.buffers(), model.buffers()):
        if e.is_floating_point():
            e.lerp_(m.detach(), 1.0 - decay)
        else:
            e.copy_(m)

"""AdamW and gradient clipping in their multi-tensor kernels (the same arithmetic, fewer passes).

The plain AdamW loops over the parameters in Python, one small kernel per tensor and
operation (profile: sqrt, lerp, mul, div per parameter, about 10 % of a CPU training step of
the benchmark network). The fused implementation (CPU and CUDA) does the same update in one
pass per tensor; gradient clipping with foreach=True computes the norms and scales the
gradients in multi-tensor kernels too. Results agree with the loops within float round-off
(tests/test_speed_reference.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW


def make_adamw(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
               device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused on devices that have the kernel, else torch's default implementation."""
    fused = device.type in FUSED_DEVICES or None
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale all gradients together so their global L2 norm is at most max_norm (foreach kernels)."""
    return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

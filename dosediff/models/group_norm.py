"""GroupNorm with a backward that is fast on channels-last CPU tensors.

On CPUs the networks run channels-last (models.factory.to_device): oneDNN's convolutions then need no
NCHW <-> blocked reorders around every call, and its NHWC kernels are as fast or faster. But
PyTorch's own CPU kernel for the GroupNorm backward on channels-last input is 5-10x slower
than on NCHW (0.78 s against 0.11 s of a 3.6 s training step at the benchmark size), which
ate the gain. The backward here is the textbook GroupNorm gradient written as two per-channel
sums over the (N, H*W, C) view and one fused pass: the same function, summed in another order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ChannelsLastGroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float):
        n, c, h, w = x.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        g = ctx.groups
        count = h * w * (c // g)  # values per group
        xv = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # views: x is channels-last
        dyv = dy.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n, h * w, c)
        sum_dy = dyv.sum(1).view(n, g, -1)  # (N, G, C/G): per channel, over H*W
        sum_dy_x = torch.linalg.vecdot(dyv, xv, dim=1).view(n, g, -1)
        mu, r = mean.view(n, g, 1), rstd.view(n, g, 1)
        gamma = weight.view(1, g, -1)
        centred = sum_dy_x - mu * sum_dy  # sum of dy * (x - mean) per channel
        s1 = (gamma * sum_dy).sum(-1, keepdim=True)
        s2 = (gamma * centred).sum(-1, keepdim=True)
        def per_channel(t: torch.Tensor) -> torch.Tensor:  # (N, G, 1 or C/G) -> (N, 1, C)
            return t.expand(n, g, c // g).reshape(n, 1, c)

        # dx = r*gamma*dy - r*s1/M - r^3*s2*(x - mean)/M, as dy*a + x*b + k per (n, c)
        b = -(r ** 3) * s2 / count
        k = -b * mu - r * s1 / count
        dx = torch.addcmul(per_channel(k), dyv, per_channel(r * gamma)).addcmul_(xv, per_channel(b))
        dx = dx.view(n, h, w, c).permute(0, 3, 1, 2)  # NCHW shape, channels-last memory
        return dx, (r * centred).sum(0).reshape(c), sum_dy.sum(0).reshape(c), None, None


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and results); channels-last float32 CPU input that needs
    gradients takes the backward above. Everything else is F.group_norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (x.device.type == "cpu" and x.dim() == 4 and x.dtype == torch.float32 and self.affine
                and torch.is_grad_enabled() and x.shape[1] > 1 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.is_autocast_enabled("cpu") and self.weight.dtype == torch.float32)
        if fast:
            return _ChannelsLastGroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

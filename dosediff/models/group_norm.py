"""GroupNorm, optionally followed by AdaGN's per-sample scale and shift and by SiLU, with a
backward that is fast on channels-last CPU tensors.

On CPUs the networks run channels-last (models.factory.to_device): oneDNN's convolutions then need no
NCHW <-> blocked reorders around every call, and its NHWC kernels are as fast or faster. But
PyTorch's own CPU kernel for the GroupNorm backward on channels-last input is 5-10x slower
than on NCHW (0.78 s against 0.11 s of a 3.6 s training step at the benchmark size), which
ate the gain. The backward here is the textbook GroupNorm gradient written as two per-channel
sums over the (N, H*W, C) view and one fused pass: the same function, summed in another order.

Between the convolutions the step is memory-bound (a 8x64x128x128 activation does not fit in
a 48 MiB L3), so GN -> (1 + scale, shift) -> SiLU is one autograd node: the scale and shift are
folded into GroupNorm's per-(sample, channel) affine, and their gradients come from the two sums
the GroupNorm backward needs anyway. That removes the separate mul, add and their backward passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) channels-last -> its (N, H*W, C) view."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n, h * w, c)


def _nchw(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(N, H*W, C) contiguous -> the (N, C, H, W) channels-last view."""
    n, c, h, w = shape
    return t.view(n, h, w, c).permute(0, 3, 1, 2)


_LARGE = 1 << 22  # values (16 MiB of float32): above this, _channel_sums avoids the temporary


def _channel_sums(dz: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H*W, C) pair -> per (sample, channel) sums of dz and of dz * x, each (N, C).

    sum + vecdot writes a dz * x temporary as large as the activation. Once that no longer
    stays in cache, batch norm's CPU backward is faster: it computes exactly these two sums per
    channel (with mean 0 and inverse std 1) in one pass, though one call per sample. On a 2-core
    Xeon: 7.7 against 18.6 ms at 8x64x128x128, 5.0 against 4.6 ms at 8x32x128x128."""
    n, _, c = x.shape
    if x.numel() <= _LARGE:
        return dz.sum(1), torch.linalg.vecdot(dz, x, dim=1)
    zero, one = x.new_zeros(c), x.new_ones(c)
    sums = [torch.ops.aten.native_batch_norm_backward(
        dz[i].T[None, :, :, None], x[i].T[None, :, :, None], None, None, None, zero, one, True, 0.0,
        [False, True, True]) for i in range(n)]  # (1, C, H*W, 1) channels-last views of sample i
    return torch.stack([s[2] for s in sums]), torch.stack([s[1] for s in sums])


class _ChannelsLastGroupNorm(torch.autograd.Function):
    """silu?(GN(x) * (1 + scale) + shift); scale and shift are (N, C) or None."""

    @staticmethod
    def forward(ctx, x, weight, bias, scale, shift, groups: int, eps: float, silu: bool):
        n, c, h, w = x.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w, groups, eps)
        onep = None
        if scale is not None:
            onep = 1 + scale
            y = _nchw(torch.addcmul(shift.view(n, 1, c), _nhwc(y), onep.view(n, 1, c)), x.shape)
        ctx.save_for_backward(x, weight, bias, mean, rstd, onep, y if silu else None)
        ctx.groups, ctx.silu = groups, silu
        return F.silu(y) if silu else y

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        x, weight, bias, mean, rstd, onep, z = ctx.saved_tensors
        n, c, h, w = x.shape
        g = ctx.groups
        count = h * w * (c // g)  # values per group
        dout = dout.contiguous(memory_format=torch.channels_last)
        dz = torch.ops.aten.silu_backward(dout, z) if ctx.silu else dout
        xv, dzv = _nhwc(x), _nhwc(dz)  # views: both are channels-last
        sum_dy, sum_dy_x = _channel_sums(dzv, xv)
        mu, r = mean.view(n, g, 1), rstd.view(n, g, 1)
        centred = (sum_dy_x.view(n, g, -1) - mu * sum_dy.view(n, g, -1)).view(n, c)  # sum dz * (x - mean)
        gamma = weight.view(1, c) if onep is None else weight * onep  # GN's affine times (1 + scale)
        s1 = (gamma * sum_dy).view(n, g, -1).sum(-1, keepdim=True)
        s2 = (gamma * centred).view(n, g, -1).sum(-1, keepdim=True)

        def per_channel(t: torch.Tensor) -> torch.Tensor:  # (N, G, 1) -> (N, 1, C)
            return t.expand(n, g, c // g).reshape(n, 1, c)

        # dx = r*gamma*dz - r*s1/M - r^3*s2*(x - mean)/M, as dz*a + x*b + k per (n, c)
        b = -(r ** 3) * s2 / count
        k = -b * mu - r * s1 / count
        r_c = per_channel(r)
        dx = torch.addcmul(per_channel(k), dzv, r_c * gamma.view(-1, 1, c)).addcmul_(xv, per_channel(b))
        rc = r_c.view(n, c) * centred  # sum of dz * normalised x, per (n, c)
        if onep is None:
            return _nchw(dx, x.shape), rc.sum(0), sum_dy.sum(0), None, None, None, None, None
        dscale = weight * rc + bias * sum_dy  # d/d(1 + scale): sum of dz * GN(x)
        return (_nchw(dx, x.shape), (onep * rc).sum(0), (onep * sum_dy).sum(0), dscale, sum_dy,
                None, None, None)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and results). forward(x, scale, shift, silu) also applies
    AdaGN's GN(x) * (1 + scale) + shift (scale, shift: (N, C)) and SiLU. Channels-last float32
    CPU input that needs gradients takes the fused function above; everything else plain ops."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                silu: bool = False) -> torch.Tensor:
        fast = (x.device.type == "cpu" and x.dim() == 4 and x.dtype == torch.float32 and self.affine
                and torch.is_grad_enabled() and x.shape[1] > 1 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.is_autocast_enabled("cpu") and self.weight.dtype == torch.float32
                and (scale is None or scale.dtype == shift.dtype == torch.float32))
        if fast:
            return _ChannelsLastGroupNorm.apply(x, self.weight, self.bias, scale, shift, self.num_groups,
                                                self.eps, silu)
        y = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        if scale is not None:
            # paper Eq. 11, as one addcmul like the fused forward: both give the same numbers
            y = torch.addcmul(shift[:, :, None, None], y, 1 + scale[:, :, None, None])
        return F.silu(y) if silu else y

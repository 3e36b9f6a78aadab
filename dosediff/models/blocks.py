"""Building blocks of the ADM-style UNet (Dhariwal & Nichol) that MMFNet and the baseline share.

Timestep embedding, residual block with adaptive GroupNorm (paper Eq. 11), multi-head
self-attention, down/up-sampling, and the encoder/decoder stacks built from a ModelConfig.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from dosediff.models.config import ModelConfig
from dosediff.models.group_norm import GroupNorm


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim), frequencies from 1 to 1/max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal code of t followed by a 2-layer MLP (ADM): (B,) -> (B, 4 * width)."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, 4 * width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.width))


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's weights and bias so a residual branch (or the output) starts at 0 (ADM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> AdaGN(t) -> SiLU -> dropout -> conv3x3 (zero-init), plus skip.

    AdaGN is paper Eq. 11, AdaGN(f, e_t) = e_t^s GN(f) + e_t^b, written in ADM's form
    GN(f) * (1 + scale) + shift (e_t^s = 1 + scale) so a freshly initialised projection
    leaves GN(f) unchanged. With `emb_dim=None` the block ignores time (plain GroupNorm).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch) if emb_dim else None
        self.norm2 = GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(self.norm1(x, silu=True))  # (B, out, H, W)
        scale = shift = None
        if self.emb_proj is not None:
            scale, shift = self.emb_proj(F.silu(emb)).chunk(2, dim=1)  # (B, out) each
        h = self.conv2(self.dropout(self.norm2(h, scale, shift, silu=True)))  # SiLU(AdaGN(h)), Eq. 11
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions of a map, residual, zero-init output (ADM)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hgt * wid)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # (B, heads, HW, d) each
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        h = h.transpose(-1, -2).reshape(b, c, hgt, wid)
        return x + self.proj(h)


class Downsample(nn.Module):
    """Strided 3x3 convolution: halves rows and columns."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.ModuleList):
    """A few layers run in order; residual blocks also receive the time embedding."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h


class Encoder(nn.Module):
    """ADM encoder as a list of stages: conv_in, then per level `num_res_blocks` residual
    blocks (+ attention where configured) and a down-sampling except after the last level.

    Multi-scale fusion sums the outputs of matching stages of several encoders, so the
    stages are exposed one by one (`stages[i](h, emb)`); `out_channels[i]` is stage i's width.
    """

    def __init__(self, in_ch: int, cfg: ModelConfig, emb_dim: int | None):
        super().__init__()
        g, ch = cfg.norm_groups, cfg.width * cfg.channel_mult[0]
        self.stages = nn.ModuleList([Stage([nn.Conv2d(in_ch, ch, 3, padding=1)])])
        self.out_channels = [ch]
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, cfg.width * mult, emb_dim, g, cfg.dropout)]
                ch = cfg.width * mult
                if cfg.has_attention(level):
                    layers.append(SelfAttention(ch, cfg.num_heads, g))
                self.stages.append(Stage(layers))
                self.out_channels.append(ch)
            if level != cfg.levels - 1:
                self.stages.append(Stage([Downsample(ch)]))
                self.out_channels.append(ch)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> list[torch.Tensor]:
        """All stage outputs, full resolution first."""
        outs = []
        for stage in self.stages:
            x = stage(x, emb)
            outs.append(x)
        return outs


class Decoder(nn.Module):
    """ADM middle block (res, attention, res) and decoder: per level, from the lowest,
    `num_res_blocks + 1` residual blocks each taking one skip map, attention where
    configured, up-sampling except at full resolution; then GN, SiLU, zero-init conv3x3 -> 1."""

    def __init__(self, cfg: ModelConfig, skip_channels: list[int], emb_dim: int | None):
        super().__init__()
        g, d = cfg.norm_groups, cfg.dropout
        ch = skip_channels[-1]
        self.middle = Stage([ResBlock(ch, ch, emb_dim, g, d), SelfAttention(ch, cfg.num_heads, g),
                             ResBlock(ch, ch, emb_dim, g, d)])
        skips = list(skip_channels)
        self.stages = nn.ModuleList()
        for level in reversed(range(cfg.levels)):
            out = cfg.width * cfg.channel_mult[level]
            for i in range(cfg.num_res_blocks + 1):
                layers: list[nn.Module] = [ResBlock(ch + skips.pop(), out, emb_dim, g, d)]
                ch = out
                if cfg.has_attention(level):
                    layers.append(SelfAttention(ch, cfg.num_heads, g))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.stages.append(Stage(layers))
        self.out = nn.Sequential(GroupNorm(g, ch), nn.SiLU(), zero_init(nn.Conv2d(ch, 1, 3, padding=1)))

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor | None = None) -> torch.Tensor:
        """Lowest-resolution map (B, C, h, w) and the encoder's skip maps -> (B, 1, H, W)."""
        skips = list(skips)
        h = self.middle(h, emb)
        for stage in self.stages:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        # The output layer in fp32: a bf16 output (8 significant bits, steps of 0.15 Gy at
        # high doses) made bf16 trainings clearly worse; with it in fp32 they match fp32 ones.
        autocast = h.device.type in ("cpu", "cuda")  # the device types with an autocast
        with torch.autocast(h.device.type, enabled=False) if autocast else nullcontext():
            return self.out(h.float())

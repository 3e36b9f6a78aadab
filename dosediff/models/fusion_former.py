"""fusionFormer (paper 2.4, Eqs. 12-13): patch-token cross attention at the lowest resolution.

Query tokens come from the CT features, key tokens from the condition (distance-map)
features and value tokens from the fused path. Each map is cut into non-overlapping
p_h x p_w patches (channels kept), each patch flattened and embedded by linear + LayerNorm,
plus a position code. Per block:

    f_att = softmax(beta(f_q) gamma(f_k)^T / sqrt(d)) delta(f_v) + delta(f_v)   (Eq. 12)
    f_ffb = MLP(LN(f_att)) + f_att                                             (Eq. 13)

and a final linear maps tokens back to patch size; the caller adds the reshaped result to
the fused map. With depth > 1, later blocks keep the same query/key tokens and take the
previous block's output as value.

Choice: the position code is a fixed 2D sinusoidal one (no parameters), because the patch
grid changes with the input size (320x192, 448x224, 128x128, small CPU sizes); the authors
use a learned embedding tied to one grid. The 1/sqrt(d) factor (d = head width) is the
usual scaled attention; the paper's Eq. 12 omits it, the authors' code has it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patchify(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*ph*pw) tokens, N = (H/ph)*(W/pw) in row-major patch order."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, ph, pw)
    return x.reshape(b, (h // ph) * (w // pw), c * ph * pw)


def unpatchify(tokens: torch.Tensor, c: int, h: int, w: int, ph: int, pw: int) -> torch.Tensor:
    """Inverse of patchify: (B, N, C*ph*pw) -> (B, C, H, W)."""
    b = tokens.shape[0]
    x = tokens.reshape(b, h // ph, w // pw, c, ph, pw).permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, ph, gw, pw)
    return x.reshape(b, c, h, w)


def sincos_2d(gh: int, gw: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed 2D sinusoidal position code of a gh x gw grid -> (gh*gw, dim); rows fill the first
    half of the channels, columns the second, each as sin/cos pairs (dim divisible by 4)."""
    quarter = dim // 4
    freqs = 1.0 / (10000.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    rows = torch.arange(gh, device=device, dtype=torch.float32)[:, None] * freqs  # (gh, dim/4)
    cols = torch.arange(gw, device=device, dtype=torch.float32)[:, None] * freqs  # (gw, dim/4)
    r = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(gh, gw, 2 * quarter)
    c = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(gh, gw, 2 * quarter)
    return torch.cat([r, c], dim=2).reshape(gh * gw, 4 * quarter).to(dtype)


class TokenEmbed(nn.Module):
    """Patch vectors -> tokens: linear + LayerNorm (the paper's embedding layer)."""

    def __init__(self, patch_dim: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(patch_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


class FusionBlock(nn.Module):
    """One attention (Eq. 12) + feed-forward (Eq. 13) block; beta, gamma, delta are linear maps."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        self.beta = nn.Linear(dim, dim)
        self.gamma = nn.Linear(dim, dim)
        self.delta = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, N, d/heads)

    def query_key(self, q_tokens: torch.Tensor, k_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """beta(f_q), gamma(f_k) split into heads; independent of the value, hence cacheable."""
        return self.split(self.beta(q_tokens)), self.split(self.gamma(k_tokens))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v_tokens: torch.Tensor) -> torch.Tensor:
        v = self.split(self.delta(v_tokens))  # (B, heads, N, d/heads)
        att = F.scaled_dot_product_attention(q, k, v) + v  # Eq. 12
        b, _, n, _ = att.shape
        f = att.transpose(1, 2).reshape(b, n, -1)  # (B, N, dim)
        return self.mlp(self.norm(f)) + f  # Eq. 13


class FusionFormer(nn.Module):
    """Cross-modal fusion at the lowest resolution; returns a map to add to the fused features."""

    def __init__(self, channels: int, patch: tuple[int, int], dim: int, depth: int, heads: int, mlp_dim: int):
        super().__init__()
        self.ph, self.pw = patch
        self.dim = dim
        patch_dim = channels * self.ph * self.pw
        self.embed_q = TokenEmbed(patch_dim, dim)
        self.embed_k = TokenEmbed(patch_dim, dim)
        self.embed_v = TokenEmbed(patch_dim, dim)
        self.blocks = nn.ModuleList([FusionBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.out = nn.Linear(dim, patch_dim)

    def _tokens(self, embed: TokenEmbed, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        pos = sincos_2d(h // self.ph, w // self.pw, self.dim, x.device, x.dtype)  # (N, dim)
        return embed(patchify(x, self.ph, self.pw)) + pos  # (B, N, dim)

    def query_key(self, q_map: torch.Tensor, k_map: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-block (query, key) from the CT and condition maps (B, C, h, w)."""
        q_tokens, k_tokens = self._tokens(self.embed_q, q_map), self._tokens(self.embed_k, k_map)
        return [blk.query_key(q_tokens, k_tokens) for blk in self.blocks]

    def forward(self, qk: list[tuple[torch.Tensor, torch.Tensor]], v_map: torch.Tensor) -> torch.Tensor:
        """Value map (B, C, h, w) attended with precomputed query/key -> (B, C, h, w) residual."""
        b, c, h, w = v_map.shape
        f = self._tokens(self.embed_v, v_map)  # (B, N, dim)
        for blk, (q, k) in zip(self.blocks, qk):
            f = blk(q, k, f)
        return unpatchify(self.out(f), c, h, w, self.ph, self.pw)

    def fuse(self, q_map: torch.Tensor, k_map: torch.Tensor, v_map: torch.Tensor) -> torch.Tensor:
        """Query from q_map, key from k_map, value from v_map -> residual map like v_map."""
        return self.forward(self.query_key(q_map, k_map), v_map)


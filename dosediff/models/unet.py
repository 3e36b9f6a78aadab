"""UNet baseline (the paper's "UNet" rows): the MMFNet backbone as a one-step regressor
from CT and condition to dose, `model(ct, cond) -> dose` (B, 1, H, W).

No noisy-dose input and no timestep: every residual block uses plain GroupNorm (AdaGN
without a time embedding). The same switches apply. Multi-scale fusion: CT and condition
encoders, fused_i = ct_i + cond_i after every stage, skips carry the fused maps (with
K = 0 the CT features alone). fusionFormer: query CT, key condition (CT when K = 0),
value the fused path, added to the map entering the middle block. Multiscale off: one
encoder on cat[CT, cond].
"""

from __future__ import annotations

import torch
from torch import nn

from dosediff.models.blocks import Decoder, Encoder
from dosediff.models.config import ModelConfig
from dosediff.models.mmfnet import ConditionEncoders, check_inputs, make_fusion


class UNetBaseline(nn.Module):
    """One-step dose regressor sharing MMFNet's blocks and ablation switches."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.multiscale:
            self.cond_encoders = ConditionEncoders(cfg, None)
            skip_channels = self.cond_encoders.ct.out_channels
        else:
            self.encoder = Encoder(1 + cfg.cond_channels, cfg, None)
            skip_channels = self.encoder.out_channels
        if cfg.fusion_former:
            self.fusion = make_fusion(cfg, skip_channels[-1])
        self.decoder = Decoder(cfg, skip_channels, None)

    def forward(self, ct: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """CT (B, 1, H, W) and condition (B, K, H, W) -> dose (B, 1, H, W) in the network's units."""
        cond = check_inputs(self.cfg, ct, cond)
        if not self.cfg.multiscale:
            skips = self.encoder(torch.cat([ct] + ([cond] if cond is not None else []), dim=1))
            return self.decoder(skips[-1], skips)
        skips, q_map, k_map = self.cond_encoders(ct, cond, None)
        h = skips[-1]
        if self.cfg.fusion_former:
            h = h + self.fusion.fuse(q_map, k_map, h)
        return self.decoder(h, skips)

"""MMFNet (paper 2.4): multi-encoder, multi-scale fusion UNet predicting the noise epsilon
(or v, as the experiment's parametrization says).

How the multi-scale fusion is wired (the paper's Fig. 2, as the authors' code does it):
three encoders of identical structure (`blocks.Encoder`) for the noisy dose y_t (1 ch),
the CT (1 ch) and the condition stack (K ch). The CT and condition encoders run their own
stages on their own features. The dose encoder runs on the *fused* path: after each of its
stages i,

    fused_i = dose_stage_i(fused_{i-1}) + ct_i + cond_i        (fused_{-1} = y_t)

fused_i feeds the dose encoder's next stage and is the skip connection to the decoder.
At the lowest resolution the fusionFormer adds FF(q=ct_last, k=cond_last, v=fused_last)
to the map entering the middle block (the skip keeps the encoder's fused map).

Switches (ModelConfig): multiscale off = one encoder on cat[y_t, CT, cond] (plain ADM
UNet); cond_channels 0 = no condition encoder, and the fusionFormer takes its key from
the CT too; cond_encoders_use_time False = the CT/condition encoders ignore t, so
`encode_condition` can compute their contribution once and `forward(..., cache=...)`
reuses it at every DDIM step and sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dosediff.errors import input_error
from dosediff.models.blocks import Decoder, Encoder, TimeEmbedding
from dosediff.models.config import ModelConfig
from dosediff.models.fusion_former import FusionFormer


def make_fusion(cfg: ModelConfig, channels: int) -> FusionFormer:
    """The fusionFormer on the `channels`-wide lowest-resolution map, sized by cfg (both networks)."""
    return FusionFormer(channels, tuple(cfg.fusion_patch_size), cfg.fusion_dim, cfg.fusion_depth, cfg.fusion_heads,
                        cfg.fusion_mlp_dim)


@dataclass
class ConditionCache:
    """What the CT/condition encoders contribute, for one batch of slices.

    sums[i]: ct_i + cond_i after encoder stage i, (B, C_i, H_i, W_i).
    qk: per fusionFormer block, (query, key) tokens (B, heads, N, d); None without it.
    """

    sums: list[torch.Tensor]
    qk: list[tuple[torch.Tensor, torch.Tensor]] | None

    @property
    def batch(self) -> int:
        return self.sums[0].shape[0]


def check_inputs(cfg: ModelConfig, ct: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor | None:
    """Validate CT (B, 1, H, W) and condition (B, K, H, W); return cond (None when K = 0)."""
    if ct.dim() != 4 or ct.shape[1] != 1:
        raise input_error("model input ct", f"shape {tuple(ct.shape)}", "(batch, 1, rows, cols)",
                          "pass the CT slices with a channel axis of size 1")
    cfg.check_input_size(ct.shape[2], ct.shape[3])
    k = 0 if cond is None else cond.shape[1]
    if k != cfg.cond_channels or (cond is not None and cond.shape[2:] != ct.shape[2:]):
        raise input_error("setting model.cond_channels", f"{cfg.cond_channels}, but the condition has shape "
                          f"{None if cond is None else tuple(cond.shape)} for CT {tuple(ct.shape)}",
                          "a condition (batch, model.cond_channels, rows, cols) on the CT grid (None when 0)",
                          "set model.cond_channels to the number of condition channels of the data")
    return cond if k else None


class ConditionEncoders(nn.Module):
    """CT encoder and (when K > 0) condition encoder, summed stage by stage."""

    def __init__(self, cfg: ModelConfig, emb_dim: int | None):
        super().__init__()
        self.ct = Encoder(1, cfg, emb_dim)
        self.cond = Encoder(cfg.cond_channels, cfg, emb_dim) if cfg.cond_channels else None

    def forward(
        self, ct: torch.Tensor, cond: torch.Tensor | None, emb: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """-> (per-stage sums, CT's lowest map, the key's lowest map: condition, or CT when K = 0)."""
        ct_feats = self.ct(ct, emb)
        if self.cond is None:
            return ct_feats, ct_feats[-1], ct_feats[-1]
        cond_feats = self.cond(cond, emb)
        sums = [a + b for a, b in zip(ct_feats, cond_feats)]
        return sums, ct_feats[-1], cond_feats[-1]


class MMFNet(nn.Module):
    """The denoiser (paper: epsilon_theta(y_t, x_CT, x_sdm, t)): `model(y_t, t, ct, cond, cache=None)`
    -> epsilon or v (B, 1, H, W)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        emb_dim = 4 * cfg.width
        self.time_embed = TimeEmbedding(cfg.width)
        if cfg.multiscale:
            self.dose_encoder = Encoder(1, cfg, emb_dim)
            self.cond_encoders = ConditionEncoders(cfg, emb_dim if cfg.cond_encoders_use_time else None)
            skip_channels = self.dose_encoder.out_channels
        else:
            self.encoder = Encoder(2 + cfg.cond_channels, cfg, emb_dim)
            skip_channels = self.encoder.out_channels
        if cfg.fusion_former:
            self.fusion = make_fusion(cfg, skip_channels[-1])
        self.decoder = Decoder(cfg, skip_channels, emb_dim)

    def _condition(self, ct: torch.Tensor, cond: torch.Tensor | None, emb: torch.Tensor | None) -> ConditionCache:
        sums, q_map, k_map = self.cond_encoders(ct, cond, emb)
        qk = self.fusion.query_key(q_map, k_map) if self.cfg.fusion_former else None
        return ConditionCache(sums, qk)

    def encode_condition(self, ct: torch.Tensor, cond: torch.Tensor | None = None) -> ConditionCache:
        """CT (B, 1, H, W) and condition (B, K, H, W) -> cache reusable at every timestep."""
        self._require_cacheable()
        return self._condition(ct, check_inputs(self.cfg, ct, cond), None)

    def _require_cacheable(self) -> None:
        if not self.cfg.multiscale or self.cfg.cond_encoders_use_time:
            raise input_error("setting model.cond_encoders_use_time", f"{self.cfg.cond_encoders_use_time} "
                              f"(model.multiscale {self.cfg.multiscale})",
                              "multiscale true and cond_encoders_use_time false for a timestep-free condition cache",
                              "set model.cond_encoders_use_time: false (and retrain), or call the model without cache")

    def forward(self, y_t: torch.Tensor, t: torch.Tensor, ct: torch.Tensor | None = None,
                cond: torch.Tensor | None = None, cache: ConditionCache | None = None) -> torch.Tensor:
        """Noisy dose y_t (B, 1, H, W), timesteps t (B,) or scalar, CT (B, 1, H, W), condition
        (B, K, H, W) or a cache from `encode_condition` -> predicted noise (B, 1, H, W)."""
        b = y_t.shape[0]
        t = t.reshape(-1).expand(b) if t.numel() == 1 else t
        emb = self.time_embed(t)  # (B, 4 * width)
        if cache is not None:
            self._require_cacheable()
            self.cfg.check_input_size(y_t.shape[2], y_t.shape[3])
            if cache.batch != b or cache.sums[0].shape[2:] != y_t.shape[2:]:
                raise input_error("model cache", f"built for {tuple(cache.sums[0].shape)}",
                                  f"the batch and size of y_t {tuple(y_t.shape)}",
                                  "build the cache from the same slices that are being denoised")
        else:
            if ct is None:
                raise input_error("model input ct", "None without a cache", "a CT batch or a cache",
                                  "pass ct (and cond), or cache=model.encode_condition(ct, cond)")
            cond = check_inputs(self.cfg, ct, cond)
            if y_t.shape[0] != ct.shape[0] or y_t.shape[2:] != ct.shape[2:]:
                raise input_error("model input y_t", f"shape {tuple(y_t.shape)}",
                                  f"(B, 1) + CT's {tuple(ct.shape[2:])}",
                                  "pass the noisy dose on the CT grid, one per CT slice")

        if not self.cfg.multiscale:
            x = torch.cat([y_t, ct] + ([cond] if cond is not None else []), dim=1)  # (B, 2 + K, H, W)
            skips = self.encoder(x, emb)
            return self.decoder(skips[-1], skips, emb)

        if cache is None:
            cache = self._condition(ct, cond, emb if self.cfg.cond_encoders_use_time else None)
        h, skips = y_t, []
        for stage, side in zip(self.dose_encoder.stages, cache.sums):
            h = stage(h, emb) + side  # multi-scale fusion: dose + CT + condition features
            skips.append(h)
        if cache.qk is not None:
            h = h + self.fusion(cache.qk, h)  # query CT, key condition, value fused path
        return self.decoder(h, skips, emb)

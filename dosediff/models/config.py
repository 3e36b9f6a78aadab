"""Typed settings of the networks (MMFNet and the UNet baseline), with the authors' size as defaults.

Build it from YAML with `dosediff.config.from_dict(ModelConfig, data, "model")`; every
value is checked here and a bad one raises an InputError naming the setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dosediff.errors import input_error

ARCHS = ("mmfnet", "unet")


@dataclass(frozen=True)
class ModelConfig:
    """Network hyperparameters. Defaults are the authors' size (about 179 M parameters at K=5).

    arch: "mmfnet" (the diffusion model's denoising network) or "unet" (one-step regressor).
    cond_channels: K, channels of the condition stack (distance maps or masks); 0 = CT only.
    width: base channels; level i has width * channel_mult[i] channels.
    channel_mult: one multiplier per resolution level; len - 1 down-samplings.
    num_res_blocks: residual blocks per encoder level (the decoder has one more, as in ADM).
    attention_levels: levels (0 = full resolution; negative counts from the lowest) whose
        residual blocks are followed by self-attention; the middle block always has one.
    num_heads: heads of that self-attention.
    multiscale: three encoders summed at every block (paper 2.4); off = one encoder on the
        concatenated inputs (plain ADM UNet).
    fusion_former: the transformer fusion at the lowest resolution (needs multiscale).
    fusion_patch_size: [rows, cols] of the non-overlapping patches at the lowest resolution.
    fusion_depth, fusion_heads, fusion_dim, fusion_mlp_dim: its blocks, heads, token width
        and MLP hidden width (authors: 1, 1, 1024, 2048).
    dropout: dropout inside residual blocks.
    norm_groups: GroupNorm groups (32 in ADM); must divide `width`.
    cond_encoders_use_time: the CT and condition encoders take the timestep (paper, default);
        False lets their features be computed once per volume (`MMFNet.encode_condition`).
    """

    arch: str = "mmfnet"
    cond_channels: int = 5
    width: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 3, 4])
    num_res_blocks: int = 2
    attention_levels: list[int] = field(default_factory=lambda: [-1])
    num_heads: int = 4
    multiscale: bool = True
    fusion_former: bool = True
    fusion_patch_size: list[int] = field(default_factory=lambda: [4, 4])
    fusion_depth: int = 1
    fusion_heads: int = 1
    fusion_dim: int = 1024
    fusion_mlp_dim: int = 2048
    dropout: float = 0.0
    norm_groups: int = 32
    cond_encoders_use_time: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, expected: str, fix: str) -> None:
            raise input_error(f"setting model.{name}", f"value {getattr(self, name)!r}", expected, fix)

        if self.arch not in ARCHS:
            bad("arch", f"one of {list(ARCHS)}", "set model.arch to mmfnet (diffusion) or unet (baseline)")
        if self.cond_channels < 0:
            bad("cond_channels", "0 (CT only) or the number of ROI channels", "set it to the number of ROIs")
        if self.width < 1 or self.norm_groups < 1 or self.width % self.norm_groups:
            raise input_error("setting model.width / model.norm_groups",
                              f"width {self.width} with norm_groups {self.norm_groups}",
                              "a positive width divisible by norm_groups (every channel count is a multiple of "
                              "width)", "e.g. width 32 with norm_groups 8 or 32, or width 128 with 32")
        if not self.channel_mult or min(self.channel_mult) < 1:
            bad("channel_mult", "a non-empty list of positive integers", "e.g. [1, 1, 2, 3, 4]")
        if self.num_res_blocks < 1:
            bad("num_res_blocks", "at least 1", "set it to 2 (the authors' value)")
        n = len(self.channel_mult)
        if any(not -n <= lv < n for lv in self.attention_levels):
            bad("attention_levels", f"level indices in [{-n}, {n - 1}] for {n} levels",
                "use -1 for the lowest resolution, or [] for attention in the middle block only")
        for name in ("num_heads", "fusion_heads", "fusion_depth"):
            if getattr(self, name) < 1:
                bad(name, "at least 1", f"set model.{name} to a positive integer")
        if any(self.width * m % self.num_heads for m in self.attention_channels()):
            bad("num_heads", "a divisor of the channels at every attention level",
                "pick a head count dividing width * channel_mult at those levels")
        if len(self.fusion_patch_size) != 2 or min(self.fusion_patch_size) < 1:
            bad("fusion_patch_size", "[rows, cols], two positive integers", "e.g. [4, 4]")
        if self.fusion_dim < 4 or self.fusion_dim % 4 or self.fusion_dim % self.fusion_heads:
            bad("fusion_dim", "a multiple of 4 (2D sinusoidal position code) and of fusion_heads",
                "e.g. 1024 (authors) or 256 for small models")
        if self.fusion_mlp_dim < 1:
            bad("fusion_mlp_dim", "at least 1", "e.g. 2 * fusion_dim")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "a probability in [0, 1)", "set it to 0 (authors) or e.g. 0.1")
        if self.fusion_former and not self.multiscale:
            raise input_error("setting model.fusion_former", "true while model.multiscale is false",
                              "fusionFormer only with separate CT/condition encoders (its query and key)",
                              "set multiscale: true, or fusion_former: false (on the experiment)")

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    def attention_channels(self) -> list[int]:
        """Multipliers of the levels that carry self-attention (middle block included)."""
        n = self.levels
        return [self.channel_mult[lv % n] for lv in self.attention_levels] + [self.channel_mult[-1]]

    def has_attention(self, level: int) -> bool:
        n = self.levels
        return any(lv % n == level for lv in self.attention_levels)

    def size_multiple(self) -> tuple[int, int]:
        """Input rows and columns must be multiples of these (down-samplings x fusion patch)."""
        down = 2 ** (self.levels - 1)
        if not self.fusion_former:
            return down, down
        return down * self.fusion_patch_size[0], down * self.fusion_patch_size[1]

    def check_input_size(self, rows: int, cols: int) -> None:
        """Raise an InputError naming the setting when a (rows, cols) input cannot pass the network."""
        down = 2 ** (self.levels - 1)
        if rows % down or cols % down:
            raise input_error("model input size", f"{rows}x{cols} with {self.levels - 1} down-samplings "
                              f"(model.channel_mult {self.channel_mult})", f"rows and columns divisible by {down}",
                              "set preprocess.size to multiples of that, or use fewer levels in model.channel_mult")
        ph, pw = self.fusion_patch_size
        if self.fusion_former and ((rows // down) % ph or (cols // down) % pw):
            raise input_error("setting model.fusion_patch_size",
                              f"{self.fusion_patch_size} on the lowest-resolution map {rows // down}x{cols // down} "
                              f"(input {rows}x{cols})", "a patch size dividing the lowest-resolution map",
                              f"choose model.fusion_patch_size dividing {rows // down}x{cols // down}, "
                              f"or make preprocess.size a multiple of {down * ph}x{down * pw}")

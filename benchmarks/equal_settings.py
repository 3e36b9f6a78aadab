"""The settings at which dosediff and the authors' code are compared, and dosediff's side built at them.

One place for the issue's benchmark size: 128x128 slices, batch 8, base width 32 with the
paper's multipliers (1, 1, 2, 3, 4), 8 DDIM steps, a condition stack of 20 channels (the
authors' OpenKBP stack: 1 PTV map + 8 masks + 11 distance maps), the fusionFormer with
1024-wide tokens on 4x4 patches of the lowest map (the authors' dim and patch for 128x128).
"""

from __future__ import annotations

import torch

SIZE, BATCH, WIDTH, MULT, DDIM_STEPS, COND_CHANNELS = 128, 8, 32, [1, 1, 2, 3, 4], 8, 20
LR, WEIGHT_DECAY, GRAD_CLIP = 1e-4, 1e-4, 1.0  # the paper and the authors' train.py


def ours_experiment(size: int = SIZE, width: int = WIDTH, cond_channels: int = COND_CHANNELS,
                    use_time: bool = True, fusion_dim: int = 1024, batch: int = BATCH, bf16: bool = False):
    """An ExperimentConfig of dosediff's MMFNet at the benchmark settings."""
    from dosediff.experiment import ExperimentConfig

    patch = max(1, size // 32)  # the authors: patch = size / 2^5, i.e. 2x2 patches of the lowest map
    network = {"width": width, "channel_mult": MULT, "norm_groups": 32, "fusion_patch_size": [patch, patch],
               "fusion_dim": fusion_dim, "fusion_mlp_dim": 2 * fusion_dim, "cond_encoders_use_time": use_time}
    train = {"bf16": bf16, "batch_size": batch, "lr": LR, "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP}
    rois = [f"roi{i}" for i in range(cond_channels)]
    return ExperimentConfig.from_mapping({"network": network, "train": train}, "bench", rois)


def ours_trainer(exp, device: torch.device | str = "cpu"):
    """dosediff's Trainer (model, EMA, AdamW, lr schedule) on `device`, single process."""
    from dosediff.train import build_trainer
    from dosediff.training.distributed import Processes

    return build_trainer(exp, Processes(0, 1, 0, torch.device(device), False))


def random_batch(b: int, size: int, cond_channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs in the normalised ranges: CT and dose in [-1, 1], distance maps ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return {"ct": torch.rand(b, 1, size, size, generator=g) * 2 - 1,
            "cond": torch.randn(b, cond_channels, size, size, generator=g),
            "dose": torch.rand(b, 1, size, size, generator=g) * 2 - 1}

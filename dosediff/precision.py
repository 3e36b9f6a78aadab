"""When to compute in bfloat16: autocast on GPUs with bf16 units, fp32 on the CPU by default.

Measured on a 2-core Zen 4 CPU (AVX512-BF16): bf16 autocast makes a training step of the
issue's benchmark network 1.5x faster (2.6 -> 1.7 s, benchmarks/bench_model.py), but the
embedded default run came out worse with it (test MAE: UNet 1.12 -> 1.27 Gy, DoseDiff
1.65 -> 1.92 Gy). The CPU's autocast also keeps GroupNorm and the residual sums in bf16,
where CUDA's computes GroupNorm in fp32. So the CPU stays fp32 unless train.bf16 /
sample.bf16 say true; CUDA devices without bf16 (before Ampere) stay fp32 too.
"""

from __future__ import annotations

import torch


def use_bf16(setting: bool | None, device: torch.device) -> bool:
    """A train.bf16 / sample.bf16 setting: true or false as given; null = a CUDA device with bf16."""
    if setting is not None:
        return setting
    return device.type == "cuda" and torch.cuda.is_bf16_supported()

"""When to compute in bfloat16: training on GPUs with bf16 units; sampling wherever bf16 units are.

Measured on a 2-core Zen 4 CPU (AVX512-BF16):
- Training: bf16 autocast makes a step of the issue's benchmark network 1.5x faster (2.6 ->
  1.7 s, benchmarks/bench_model.py), but the embedded default run came out worse with it
  (test MAE: UNet 1.12 -> 1.27 Gy, DoseDiff 1.65 -> 1.92 Gy). The CPU's autocast keeps
  GroupNorm and the residual sums in bf16, where CUDA's computes GroupNorm in fp32. So
  training on the CPU stays fp32 unless train.bf16 says true.
- Sampling: bf16 predicts a volume 1.8x faster (91 -> 50 s, benchmarks/bench_predict.py)
  and changed the default DoseDiff's predictions by 0.06 Gy on average, with the same MAE
  (2.04 vs 2.03 Gy over 10 phantoms). So prediction uses bf16 wherever the device has it.
A CPU without bf16 units would emulate bf16 and get slower; GPUs before Ampere lack it.
"""

from __future__ import annotations

import torch


def native_bf16(device: torch.device) -> bool:
    """True for CUDA devices with bf16 support and CPUs with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # private helpers, but torch has no public check for the CPU
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def training_bf16(setting: bool | None, device: torch.device) -> bool:
    """train.bf16: true or false as given; null = on for CUDA devices with bf16 units."""
    if setting is not None:
        return setting
    return device.type == "cuda" and native_bf16(device)


def sampling_bf16(setting: bool | None, device: torch.device) -> bool:
    """sample.bf16: true or false as given; null = on wherever the device has bf16 units."""
    return native_bf16(device) if setting is None else setting


def bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on `device` when enabled, a no-op context otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)

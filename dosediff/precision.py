"""When to compute in bfloat16: training on GPUs with bf16 units; sampling wherever bf16 units are.

The measurements behind these defaults are in the README (bf16).
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

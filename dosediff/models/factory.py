"""Build a network from a ModelConfig and describe it (parameter counts by part)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from dosediff.models.config import ModelConfig
from dosediff.models.mmfnet import MMFNet
from dosediff.models.unet import UNetBaseline


def build_model(cfg: ModelConfig) -> nn.Module:
    """MMFNet (arch "mmfnet", the diffusion model's denoising network) or UNetBaseline ("unet")."""
    return MMFNet(cfg) if cfg.arch == "mmfnet" else UNetBaseline(cfg)


def to_device(net: nn.Module, device: torch.device | str) -> nn.Module:
    """`net` on `device` for training; on CPUs with channels-last weights, so every activation
    follows in that layout (why: models/group_norm.py). Sampling keeps NCHW, unmeasured."""
    net = net.to(device)
    return net.to(memory_format=torch.channels_last) if torch.device(device).type == "cpu" else net


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(cfg: ModelConfig) -> dict:
    """Parameter count (total and per top-level part), input size multiple and the config.

    The model is built on the meta device, so even the authors' size costs no memory."""
    with torch.device("meta"):
        model = build_model(cfg)
    parts: dict[str, int] = {}
    for name, child in model.named_children():
        if name == "cond_encoders":
            for sub, enc in child.named_children():
                parts[f"{sub}_encoder"] = count_parameters(enc)
        else:
            parts[name] = count_parameters(child)
    return {
        "arch": cfg.arch,
        "parameters": count_parameters(model),
        "parameters_by_part": parts,
        "input_size_multiple": list(cfg.size_multiple()),
        "config": dataclasses.asdict(cfg),
    }

"""The authors' DoseDiff (github.com/whisney/DoseDiff, MIT) at the benchmark settings, imported
from their folder, unmodified: their model as train.py builds it (keyword arguments read from
train.py with `ast`, width set to the benchmark's), their training step and their DDIM loop.
Needs `einops` (their vit.py imports it)."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import numpy as np
import torch

from equal_settings import BATCH, COND_CHANNELS, DDIM_STEPS, GRAD_CLIP, LR, WEIGHT_DECAY, WIDTH, random_batch

T = 1000  # their --T default


def model_kwargs(peers: Path) -> dict:
    """Keyword arguments of the UNetModel_MS_Former(...) call in their train.py."""
    tree = ast.parse((peers / "train.py").read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # not a literal
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UNetModel_MS_Former":
            return {kw.arg: names[kw.value.id] if isinstance(kw.value, ast.Name) else ast.literal_eval(kw.value)
                    for kw in node.keywords}
    raise RuntimeError(f"no UNetModel_MS_Former(...) call in {peers / 'train.py'}")


def build(peers: Path, size: int, respacing, width: int = WIDTH):
    """Their model (width `width`, dis_channels COND_CHANNELS, image size `size`) and SpacedDiffusion."""
    sys.path.insert(0, str(peers))
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion.respace import SpacedDiffusion, space_timesteps
    from guided_diffusion.unet import UNetModel_MS_Former

    kw = dict(model_kwargs(peers), model_channels=width, dis_channels=COND_CHANNELS, image_size=[size, size])
    model = UNetModel_MS_Former(**kw)
    diffusion = SpacedDiffusion(use_timesteps=space_timesteps(T, respacing),
                                betas=gd.get_named_beta_schedule("linear", T),
                                model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.FIXED_LARGE,
                                loss_type=gd.LossType.MSE, rescale_timesteps=False)
    return model, diffusion


def train(peers: Path, size: int, steps: int) -> dict:
    torch.manual_seed(0)
    np.random.seed(0)  # their UniformSampler draws t with np.random
    model, diffusion = build(peers, size, [T])
    from guided_diffusion.resample import create_named_schedule_sampler  # importable once build() ran

    sampler = create_named_schedule_sampler("uniform", diffusion)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    b = random_batch(BATCH, size, COND_CHANNELS)
    model.train()
    times = []
    for i in range(1 + steps):  # their train.py loop body, without DDP and .cuda()
        t0 = time.perf_counter()
        opt.zero_grad()
        t, weights = sampler.sample(BATCH, "cpu")
        losses = diffusion.training_losses(model=model, x_start=b["dose"], t=t,
                                           model_kwargs={"ct": b["ct"], "dis": b["cond"]}, noise=None)
        loss = (losses["loss"] * weights).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return {"s": times, "params": sum(p.numel() for p in model.parameters()),
            "fusion_params": sum(p.numel() for p in model.fusion.parameters())}


@torch.no_grad()
def ddim(peers: Path, size: int) -> dict:
    torch.manual_seed(0)
    model, diffusion = build(peers, size, f"ddim{DDIM_STEPS}")
    model.eval()
    b = random_batch(BATCH, size, COND_CHANNELS)
    kwargs = {"ct": b["ct"], "dis": b["cond"]}
    model(torch.randn(BATCH, 1, size, size), torch.zeros(BATCH, dtype=torch.long), **kwargs)  # warm-up
    t0 = time.perf_counter()
    # pred.py's call: clip_denoised=True, eta=0
    diffusion.ddim_sample_loop(model, (BATCH, 1, size, size), model_kwargs=kwargs, noise=None,
                               clip_denoised=True, eta=0.0, progress=False)
    return {"s": [(time.perf_counter() - t0) / BATCH], "evals": diffusion.num_timesteps}


def measure(row: str, peers: Path, size: int, steps: int) -> dict:
    return train(peers, size, steps) if row == "train" else ddim(peers, size)

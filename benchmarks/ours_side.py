"""dosediff at the benchmark settings: its real training step and its real DDIM predictor."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from equal_settings import BATCH, COND_CHANNELS, DDIM_STEPS, ours_experiment, ours_trainer, random_batch

DDIM_VARIANTS = {  # side -> (CT/condition encoders see t, bf16, fusion_dim)
    "ours": (True, False, 1024), "ours-cached": (False, False, 1024), "ours-bf16": (True, True, 1024),
    "ours-ff64": (True, False, 64),
}


def train(size: int, steps: int, bf16: bool = False) -> dict:
    from dosediff.train import train_step

    tr = ours_trainer(ours_experiment(size, bf16=bf16))
    b = random_batch(BATCH, size, COND_CHANNELS)
    times = []
    for i in range(1 + steps):  # 1 warm-up
        t0 = time.perf_counter()
        train_step(tr, b)
        if i:
            times.append(time.perf_counter() - t0)
    return {"s": times, "params": sum(p.numel() for p in tr.net.parameters()),
            "fusion_params": sum(p.numel() for p in tr.net.fusion.parameters())}


def ddim(side: str, size: int) -> dict:
    from dosediff.experiment import SampleConfig
    from dosediff.prediction.sampling import slice_predictor

    use_time, bf16, fusion_dim = DDIM_VARIANTS[side]
    exp = ours_experiment(size, use_time=use_time, fusion_dim=fusion_dim)
    tr = ours_trainer(exp)
    net = tr.net.eval()
    b = random_batch(BATCH, size, COND_CHANNELS)
    predictor = slice_predictor(net, exp, torch.device("cpu"), sample=SampleConfig(steps=DDIM_STEPS), bf16=bf16,
                                use_cache=not use_time)
    noise = torch.randn((BATCH, predictor.noise_draws, 1, size, size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # warm-up: one network call at the batch shape
        net(noise[:, 0], torch.zeros(BATCH, dtype=torch.long), b["ct"], b["cond"])
    t0 = time.perf_counter()
    predictor.predict(predictor.prepare(b["ct"], b["cond"]), noise)
    return {"s": [(time.perf_counter() - t0) / BATCH]}


def prepare_predict(work: Path, case_dir: Path) -> dict:
    """The predicted-volume row's inputs: the patient ingested and preprocessed, a random model."""
    from bench_predict import prepare

    prepare(case_dir, work, 32)
    (work / "model").symlink_to(work / "model-time1")  # the paper's design
    return {}


def measure(row: str, side: str, size: int, steps: int, work: Path, case_dir: Path) -> dict:
    if row == "prepare":
        return prepare_predict(work, case_dir)
    return train(size, steps, side == "ours-bf16") if row == "train" else ddim(side, size)

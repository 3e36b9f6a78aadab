"""Benchmark MMFNet on the CPU: seconds per training step and per 8-step DDIM volume.

Each measurement runs in its own child process so that its peak memory (ru_maxrss) is
its own. Defaults are the issue's setting: 128x128 slices, batch 8, base width 32 with the
paper's multipliers (1, 1, 2, 3, 4), K = 10 condition channels, 2 torch threads, fp32
(--precision bf16 for bf16 autocast).

    python benchmarks/bench_model.py                       # all three measurements
    python benchmarks/bench_model.py --only sample-cached --timed-slices 16
    python benchmarks/bench_model.py --precision bf16 --json results/bench_model.json

train:          forward + backward + gradient clipping + AdamW step (the paper's design), median
                of --train-steps after --warmup.
sample-paper:   8-step DDIM (eta 0) of --timed-slices slices in batches of --sample-batch with the
                paper's design; per slice, and per volume extrapolated to --slices slices.
sample-cached:  the same with cond_encoders_use_time=False: CT and condition features computed
                once per batch of slices (timed) and reused at every DDIM step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from dosediff.diffusion.ddim import ddim_sample
from dosediff.diffusion.loss import diffusion_loss
from dosediff.diffusion.schedule import linear_schedule
from dosediff.models.config import ModelConfig
from dosediff.models.factory import build_model, count_parameters
from dosediff.precision import bf16_autocast
from equal_settings import random_batch

PHASES = ("train", "sample-paper", "sample-cached")
CPU = torch.device("cpu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128, help="slice rows = columns (default 128)")
    p.add_argument("--batch", type=int, default=8, help="training batch (default 8)")
    p.add_argument("--width", type=int, default=32, help="base channels (default 32)")
    p.add_argument("--mult", type=int, nargs="+", default=[1, 1, 2, 3, 4], help="channel multipliers")
    p.add_argument("--cond-channels", type=int, default=10, help="K condition channels (default 10)")
    p.add_argument("--fusion-dim", type=int, default=1024, help="fusionFormer token width (default 1024)")
    p.add_argument("--norm-groups", type=int, default=32, help="GroupNorm groups (default 32)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--train-steps", type=int, default=5, help="timed training steps (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    p.add_argument("--slices", type=int, default=128, help="slices per volume to extrapolate to (default 128)")
    p.add_argument("--timed-slices", type=int, default=32, help="slices actually sampled (default 32)")
    p.add_argument("--sample-batch", type=int, default=8, help="slices per DDIM batch (default 8)")
    p.add_argument("--steps", type=int, default=8, help="DDIM steps (default 8)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default, as training and prediction on the CPU) or bf16 autocast")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last memory format for sampling (training stays NCHW: GroupNorm's "
                        "backward is slow in channels-last on the CPU)")
    p.add_argument("--only", choices=PHASES, nargs="+", help="run only these measurements")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # child process
    return p.parse_args(argv)


def model_config(args: argparse.Namespace, cached: bool) -> ModelConfig:
    return ModelConfig(width=args.width, channel_mult=args.mult, cond_channels=args.cond_channels,
                       fusion_dim=args.fusion_dim, fusion_mlp_dim=2 * args.fusion_dim,
                       norm_groups=args.norm_groups,
                       cond_encoders_use_time=not cached)


def bench_train(args: argparse.Namespace) -> dict:
    model = build_model(model_config(args, cached=False)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    ac = linear_schedule()
    ct, cond, dose = random_batch(args.batch, args.size, args.cond_channels).values()
    times = []
    for i in range(args.warmup + args.train_steps):
        start = time.perf_counter()
        with bf16_autocast(CPU, args.precision == "bf16"):
            loss = diffusion_loss(lambda y, t: model(y, t, ct, cond), dose, ac)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return {"parameters": count_parameters(model), "s_per_step_median": statistics.median(times),
            "s_per_step_all": [round(t, 3) for t in times]}


def bench_sample(args: argparse.Namespace, cached: bool) -> dict:
    model = build_model(model_config(args, cached)).eval()
    ac = linear_schedule()
    ct_all, cond_all, _ = random_batch(args.timed_slices, args.size, args.cond_channels).values()
    if args.channels_last:  # weights and inputs; every conv output follows the weights' format
        model = model.to(memory_format=torch.channels_last)
        ct_all, cond_all = (x.contiguous(memory_format=torch.channels_last) for x in (ct_all, cond_all))
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode(), bf16_autocast(CPU, args.precision == "bf16"):  # warm-up: one batch, one step
        b = min(args.sample_batch, args.timed_slices)
        model(torch.zeros(b, 1, args.size, args.size), torch.zeros(b, dtype=torch.long), ct_all[:b], cond_all[:b])
    batch_times = []
    start = time.perf_counter()
    with torch.inference_mode(), bf16_autocast(CPU, args.precision == "bf16"):
        for lo in range(0, args.timed_slices, args.sample_batch):
            t0 = time.perf_counter()
            ct, cond = ct_all[lo:lo + args.sample_batch], cond_all[lo:lo + args.sample_batch]
            if cached:
                cache = model.encode_condition(ct, cond)
                fn = lambda y, t, cache=cache: model(y, t, cache=cache)  # noqa: E731
            else:
                fn = lambda y, t, ct=ct, cond=cond: model(y, t, ct, cond)  # noqa: E731
            ddim_sample(fn, (ct.shape[0], 1, args.size, args.size), ac, steps=args.steps, generator=gen)
            batch_times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    per_slice = total / args.timed_slices
    return {"parameters": count_parameters(model), "timed_slices": args.timed_slices,
            "s_per_batch": [round(t, 2) for t in batch_times], "s_per_slice": per_slice,
            "s_per_volume_extrapolated": per_slice * args.slices}


def run_phase(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    if args.phase == "train":
        out = bench_train(args)
    else:
        out = bench_sample(args, cached=args.phase == "sample-cached")
    out.update(phase=args.phase, precision="bf16 autocast" if args.precision == "bf16" else "fp32",
               peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
               load_avg_1min_before=load_before, load_avg_1min_after=os.getloadavg()[0])
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase:
        print(json.dumps(run_phase(args)))
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    results = []
    for phase in args.only or PHASES:
        proc = subprocess.run([sys.executable, __file__, *argv, "--phase", phase], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{phase} failed:\n{proc.stderr}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        if phase == "train":
            print(f"train ({r['precision']}): {r['s_per_step_median']:.2f} s/step (median of {r['s_per_step_all']}), "
                  f"peak {r['peak_rss_gb']:.2f} GB, {r['parameters']:,} parameters, "
                  f"load {r['load_avg_1min_before']:.1f}->{r['load_avg_1min_after']:.1f}", flush=True)
        else:
            print(f"{phase} ({r['precision']}): {r['s_per_slice']:.3f} s/slice, "
                  f"{r['s_per_volume_extrapolated']:.1f} s per "
                  f"{args.slices}-slice volume (extrapolated from {r['timed_slices']} slices, batches "
                  f"{r['s_per_batch']} s), peak {r['peak_rss_gb']:.2f} GB, "
                  f"load {r['load_avg_1min_before']:.1f}->{r['load_avg_1min_after']:.1f}", flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "phase", "only")}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()

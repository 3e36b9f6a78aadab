"""Where the time of a training step and of a DDIM step goes: torch.profiler tables.

    python benchmarks/profile_step.py                      # both, the issue's size
    python benchmarks/profile_step.py --what ddim --size 64 --rows 20

Training step: forward, loss, backward, gradient clipping, AdamW and EMA through the
real `dosediff.train.train_step`. DDIM step: one call of the network on a batch of
noisy slices (eight of them make an 8-step DDIM volume batch). Warm-up (--warmup training
steps; one DDIM call), then one profiled run. Two tables each: by operator (self CPU time;
backward kernels appear as their autograd nodes) and by module (forward only: every
module's call is a record_function named after its place in the network).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))  # equal_settings.py beside this file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=("train", "ddim", "both"), default="both")
    p.add_argument("--size", type=int, default=128, help="slice rows = columns (default 128)")
    p.add_argument("--batch", type=int, default=8, help="slices per step (default 8)")
    p.add_argument("--width", type=int, default=32, help="base channels (default 32)")
    p.add_argument("--cond-channels", type=int, default=20, help="K (default 20, the authors' stack)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=15, help="rows per table (default 15)")
    p.add_argument("--warmup", type=int, default=3, help="training steps before the profiled one (default 3: "
                   "the first two still fault fresh memory in)")
    p.add_argument("--depth", type=int, default=3, help="module names down to this depth (default 3)")
    return p.parse_args(argv)


def label_modules(model: nn.Module, depth: int) -> None:
    """Wrap every module down to `depth` dots in a record_function named module::<path>."""
    for name, mod in model.named_modules():
        if not name or name.count(".") >= depth:
            continue
        label = f"module::{name}"

        def pre(_m, _a, label=label):
            _m._prof_ctx = record_function(label)
            _m._prof_ctx.__enter__()

        def post(_m, _a, _o):
            _m._prof_ctx.__exit__(None, None, None)

        mod.register_forward_pre_hook(pre)
        mod.register_forward_hook(post)


def tables(prof: profile, rows: int, title: str) -> str:
    events = prof.key_averages()
    ops = [e for e in events if not e.key.startswith("module::")]
    mods = sorted((e for e in events if e.key.startswith("module::")), key=lambda e: -e.cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    lines = [f"== {title}: {total:.2f} s of CPU time profiled", "-- by operator (self CPU time)"]
    lines += [f"{e.self_cpu_time_total / 1e6:8.3f} s {100 * e.self_cpu_time_total / 1e6 / total:5.1f} %"
              f"  x{e.count:<5d} {e.key}" for e in sorted(ops, key=lambda e: -e.self_cpu_time_total)[:rows]]
    lines.append("-- by module (forward, CPU time including children)")
    lines += [f"{e.cpu_time_total / 1e6:8.3f} s  x{e.count:<4d} {e.key[8:]}" for e in mods[:rows]]
    return "\n".join(lines)


def setup(args: argparse.Namespace):
    from equal_settings import ours_experiment, ours_trainer, random_batch

    tr = ours_trainer(ours_experiment(args.size, args.width, args.cond_channels, batch=args.batch))
    return tr, random_batch(args.batch, args.size, args.cond_channels)


def profile_train(args: argparse.Namespace) -> str:
    from dosediff.train import train_step

    tr, batch = setup(args)
    label_modules(tr.net, args.depth)
    for _ in range(args.warmup):
        train_step(tr, batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(tr, batch)
    return tables(prof, args.rows, f"training step, batch {args.batch} at {args.size}x{args.size}")


@torch.inference_mode()
def profile_ddim(args: argparse.Namespace) -> str:
    tr, batch = setup(args)
    net = tr.net.eval()
    label_modules(net, args.depth)
    y = torch.randn_like(batch["dose"])
    t = torch.full((args.batch,), 500, dtype=torch.long)
    net(y, t, batch["ct"], batch["cond"])  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        net(y, t, batch["ct"], batch["cond"])
    return tables(prof, args.rows, f"one DDIM network call (paper design), {args.batch} slices")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what in ("train", "both"):
        print(profile_train(args), flush=True)
    if args.what in ("ddim", "both"):
        print(profile_ddim(args), flush=True)


if __name__ == "__main__":
    main()

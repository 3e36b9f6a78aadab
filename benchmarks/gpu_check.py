"""The GPU measurements of benchmarks/gpu_check.sh: dosediff and the authors' code at the authors' size.

    python benchmarks/gpu_check.py --out results/gpu_check.json            # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json     # CPU, tiny sizes, seconds

Per side (dosediff, the authors' code when --peers has it) and torch.compile off/on:
a bf16-autocast training step (batch 8, 128x128, width 128, multipliers 1,1,2,3,4, 20
condition channels; median of a few after warm-up) and a predicted 128-slice volume (8-step
DDIM, batches of 64 slices as the authors' pred.py --bs 64), with peak GPU memory
(torch.cuda.max_memory_allocated). Target: under 10 s per volume. --dry-run runs the same
code on the CPU at 32x32, width 32, 4 slices, so CI exercises every path without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from dosediff.precision import bf16_autocast

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from equal_settings import COND_CHANNELS, DDIM_STEPS, ours_experiment, ours_trainer, random_batch  # noqa: E402

VOLUME_TARGET_S = 10.0
FULL = {"size": 128, "width": 128, "slices": 128, "sample_batch": 64, "train_batch": 8, "steps": 3}
DRY = {"size": 32, "width": 32, "slices": 4, "sample_batch": 2, "train_batch": 2, "steps": 1}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() after one warm-up call (compilation happens there)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ours_train(s: dict, device: torch.device, compiled: bool) -> float:
    from dosediff.train import train_step

    tr = ours_trainer(ours_experiment(s["size"], s["width"], batch=s["train_batch"]), device)
    tr.model, tr.use_bf16 = (torch.compile(tr.net) if compiled else tr.net), True  # bf16 autocast as on GPUs
    batch = {k: v.to(device) for k, v in random_batch(s["train_batch"], s["size"], COND_CHANNELS).items()}
    return timed(lambda: train_step(tr, batch), device, s["steps"])


def ours_volume(s: dict, device: torch.device, compiled: bool) -> float:
    from dosediff.experiment import SampleConfig
    from dosediff.prediction.sampling import slice_predictor

    exp = ours_experiment(s["size"], s["width"])
    net = ours_trainer(exp, device).net.eval()
    model = torch.compile(net) if compiled else net
    pred = slice_predictor(model, exp, device, sample=SampleConfig(steps=DDIM_STEPS), bf16=True)
    data = random_batch(s["slices"], s["size"], COND_CHANNELS)
    noise = torch.randn((s["slices"], 1, 1, s["size"], s["size"]))

    def volume() -> None:
        for lo in range(0, s["slices"], s["sample_batch"]):
            part = slice(lo, lo + s["sample_batch"])
            pred.predict(pred.prepare(data["ct"][part].to(device), data["cond"][part].to(device)),
                         noise[part].to(device)).cpu()

    return timed(volume, device, 1)


def authors_parts(peers: Path, s: dict, device: torch.device, respacing):
    import authors_side

    model, diffusion = authors_side.build(peers, s["size"], respacing, width=s["width"])
    return model.to(device), diffusion


def authors_train(peers: Path, s: dict, device: torch.device, compiled: bool, bf16: bool = True) -> float:
    model, diffusion = authors_parts(peers, s, device, [1000])
    net = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    b = {k: v.to(device) for k, v in random_batch(s["train_batch"], s["size"], COND_CHANNELS).items()}
    n = s["train_batch"]

    def step() -> None:  # their train.py loop body, under bf16 autocast like ours (or fp32)
        opt.zero_grad()
        t = torch.randint(0, 1000, (n,), device=device)
        with bf16_autocast(device, bf16):
            loss = diffusion.training_losses(net, b["dose"], t, model_kwargs={"ct": b["ct"], "dis": b["cond"]})
        loss["loss"].mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return timed(step, device, s["steps"])


def authors_volume(peers: Path, s: dict, device: torch.device, compiled: bool) -> float:
    model, diffusion = authors_parts(peers, s, device, f"ddim{DDIM_STEPS}")
    net = torch.compile(model.eval()) if compiled else model.eval()
    data = random_batch(s["slices"], s["size"], COND_CHANNELS)

    @torch.no_grad()
    def volume() -> None:  # pred.py: every slice, batches of --bs
        for lo in range(0, s["slices"], s["sample_batch"]):
            ct, dis = data["ct"][lo:lo + s["sample_batch"]].to(device), data["cond"][lo:lo + s["sample_batch"]].to(device)
            with bf16_autocast(device, True):
                diffusion.ddim_sample_loop(net, (ct.shape[0], 1, s["size"], s["size"]), clip_denoised=True,
                                           model_kwargs={"ct": ct, "dis": dis}, eta=0.0, progress=False)

    return timed(volume, device, 1)


def measure(name: str, fn, device: torch.device) -> dict:
    reset_peak(device)
    try:
        seconds, error = fn(), None
    except Exception as err:  # one failing variant (e.g. torch.compile without a compiler) must not stop the rest
        seconds, error = None, f"{type(err).__name__}: {str(err)[:300]}"
    return {"what": name, "seconds": seconds, "peak_gpu_gb": peak_gb(device), "error": error}


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cpu" if args.dry_run else "cuda")
    s = DRY if args.dry_run else FULL
    have_peers = (args.peers / "guided_diffusion" / "unet.py").is_file()
    rows = []
    for compiled in (False, True) if not args.dry_run or args.compile_in_dry_run else (False,):
        tag = "compile" if compiled else "eager"
        rows.append(measure(f"dosediff training step ({tag})", lambda: ours_train(s, device, compiled), device))
        rows.append(measure(f"dosediff {s['slices']}-slice volume ({tag})", lambda: ours_volume(s, device, compiled),
                            device))
        if have_peers:
            for bf16 in (True, False):  # their code under CPU autocast fails (a bf16 input to an fp32 bias)
                rows.append(measure(f"authors training step ({tag}{'' if bf16 else ', fp32'})",
                                    lambda: authors_train(args.peers, s, device, compiled, bf16), device))
            rows.append(measure(f"authors {s['slices']}-slice volume ({tag})",
                                lambda: authors_volume(args.peers, s, device, compiled), device))
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "none (CPU dry run)"
    return {"device": gpu, "torch": torch.__version__, "settings": s, "authors_code": have_peers,
            "volume_target_s": VOLUME_TARGET_S, "rows": rows}


def table(result: dict) -> str:
    lines = [f"device: {result['device']}, torch {result['torch']}, settings {result['settings']}",
             "| measurement (bf16 autocast) | seconds | peak GPU memory |", "|---|---|---|"]
    for r in result["rows"]:
        sec = f"{r['seconds']:.3f}" if r["seconds"] is not None else f"failed: {r['error']}"
        mem = f"{r['peak_gpu_gb']:.2f} GB" if r["peak_gpu_gb"] is not None else "-"
        if "volume" in r["what"] and r["seconds"] is not None and not result["device"].startswith("none"):
            sec += " (target < 10 s: " + ("ok)" if r["seconds"] < result["volume_target_s"] else "MISSED)")
        lines.append(f"| {r['what']} | {sec} | {mem} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="the JSON to write")
    p.add_argument("--peers", type=Path, default=HERE.parents[1] / "shared" / "peers" / "whisney-DoseDiff")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: exercise the code paths")
    p.add_argument("--compile-in-dry-run", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run", file=sys.stderr)
        return 2
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    failed = [r["what"] for r in result["rows"] if r["error"] and r["what"].startswith("dosediff")]
    if failed and args.dry_run:  # on the CPU every dosediff path must run; on a GPU failures are reported
        print(f"failed in the dry run: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

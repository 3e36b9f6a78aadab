"""Training loop of one experiment: `dosediff train` (one workflow rule per dataset and experiment).

AdamW, lr x lr_decay_factor at lr_decay_at of the steps (authors: x0.1 at 70 %), gradient
clipping, EMA of the weights; validation MAE in Gy inside the body; tqdm bar on stderr and
a CSV log (step, loss, lr, val_mae_gy, seconds); checkpoint.pt every checkpoint_every steps
and at the end; model.safetensors + config.json when the last step is done.

Resume: a run started again with the same command continues from out_dir/checkpoint.pt.
Everything random in a step is seeded from (seed, step, rank) -- the slices and their
augmentation (StepBatches), the noise and timesteps (the global torch RNG, re-seeded per
step) -- so a resumed run makes the same steps an uninterrupted one makes.

Multi-GPU: launch with torchrun; DistributedDataParallel, each rank its share of every
step's slices (batch_size per process), rank 0 alone validates and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dosediff import checkpoint as ckpt
from dosediff.config import DatasetConfig
from dosediff.data.dataset import SliceDataset
from dosediff.errors import input_error, log, warn
from dosediff.experiment import ExperimentConfig, saved_experiment
from dosediff.heap import keep_freed_memory
from dosediff.models.factory import build_model, to_device
from dosediff.precision import bf16_autocast, training_bf16
from dosediff.training.csvlog import LOG_NAME, append_log, open_log
from dosediff.training.distributed import Processes, all_mean, barrier, setup_processes, teardown
from dosediff.training.ema import make_ema, update_ema
from dosediff.training.objective import make_schedule, training_loss
from dosediff.training.optim import clip_gradients, make_adamw
from dosediff.training.sampler import StepBatches
from dosediff.training.validate import validate

# train settings that may change between a run and its resumption (they do not alter the steps)
RUNTIME_KEYS = ("checkpoint_every", "validate_every", "log_every", "num_workers", "val_max_slices", "bf16",
                "max_minutes")


@dataclass
class TrainResult:
    """What a call of train leaves: the output path, progress and the networks."""

    path: Path  # model.safetensors when the last step is done, else checkpoint.pt
    step: int
    finished: bool
    steps_this_run: int
    model: nn.Module  # optimised weights (unwrapped from DDP)
    ema: nn.Module


@dataclass
class Trainer:
    """Everything a training step reads or changes."""

    exp: ExperimentConfig
    procs: Processes
    net: nn.Module  # the network itself
    model: nn.Module  # net, or its DDP wrapper
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    schedule: object | None
    use_bf16: bool
    step: int = 0
    elapsed: float = 0.0  # seconds of training over all runs


def case_paths(splits_path: Path, h5_dir: Path, split: str) -> list[Path]:
    """HDF5 files of one split of splits.json."""
    try:
        splits = json.loads(Path(splits_path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise input_error(splits_path, f"unreadable ({err})", "splits.json written by `dosediff split`",
                          "run the split step of the workflow") from err
    if split not in splits:
        raise input_error(splits_path, f"no {split!r} list", "keys train, validation, test",
                          "re-run the split step of the workflow")
    paths = [Path(h5_dir) / f"{case}.h5" for case in splits[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise input_error(h5_dir, f"missing HDF5 files {missing[:5]}", f"one file per {split} case",
                          "run the preprocess step for these cases")
    return paths


def lr_factor(exp: ExperimentConfig) -> Callable[[int], float]:
    """Step decay: 1 before round(lr_decay_at x steps) optimizer steps, lr_decay_factor after."""
    decay_step = round(exp.train.lr_decay_at * exp.train.steps)
    factor = exp.train.lr_decay_factor
    return lambda done: 1.0 if done < decay_step else factor


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of everything random inside one step of one rank."""
    return int(np.random.SeedSequence([seed, 2, step, rank]).generate_state(1, np.uint64)[0] >> 1)


def ema_decay(decay: float, step: int) -> float:
    """EMA decay with a warm-up, min(decay, (1 + step) / (10 + step)): early on the average
    follows the weights, so short runs (the embedded default) are not dominated by the
    random initial weights; after a few thousand steps it is the configured decay."""
    return min(decay, (1.0 + step) / (10.0 + step))


def build_trainer(exp: ExperimentConfig, procs: Processes) -> Trainer:
    """Model (same initial weights on every rank), EMA, AdamW and the lr schedule."""
    if procs.device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(exp.train.seed)
    net = to_device(build_model(exp.network), procs.device)
    ema = make_ema(net)
    model: nn.Module = net
    if procs.distributed:
        ids = [procs.device.index] if procs.device.type == "cuda" else None
        model = DistributedDataParallel(net, device_ids=ids)  # broadcasts rank 0's weights
    optimizer = make_adamw(net.parameters(), exp.train.lr, exp.train.weight_decay, procs.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(exp))
    bf16 = training_bf16(exp.train.bf16, procs.device)
    return Trainer(exp, procs, net, model, ema, optimizer, scheduler, make_schedule(exp, procs.device), bf16)


def train_step(tr: Trainer, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """One optimizer step on this rank's batch; returns the loss (detached) and the lr it used."""
    torch.manual_seed(step_seed(tr.exp.train.seed, tr.step, tr.procs.rank))  # noise, timesteps, dropout
    batch = {k: v.to(tr.procs.device, non_blocking=True) for k, v in batch.items()}
    tr.model.train()
    with bf16_autocast(tr.procs.device, tr.use_bf16):
        loss = training_loss(tr.model, batch, tr.exp, tr.schedule)
    tr.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if tr.exp.train.grad_clip > 0:
        clip_gradients(tr.net.parameters(), tr.exp.train.grad_clip)
    lr = float(tr.optimizer.param_groups[0]["lr"])
    tr.optimizer.step()
    tr.scheduler.step()
    update_ema(tr.ema, tr.net, ema_decay(tr.exp.train.ema_decay, tr.step))
    tr.step += 1
    return loss.detach(), lr


def _comparable(exp_dict: dict) -> dict:
    """The config without the settings a resumed run may change."""
    d = saved_experiment(json.loads(json.dumps(exp_dict)), "checkpoint config")
    for key in RUNTIME_KEYS:
        d["train"].pop(key, None)
    d.pop("sample", None)
    return d


def checkpoint_state(tr: Trainer) -> dict:
    """Everything a resumed run needs, in types the weights-only unpickler accepts."""
    from dosediff import __version__

    return {
        "format_version": ckpt.FORMAT_VERSION,
        "dosediff_version": __version__,
        "step": tr.step,
        "elapsed": tr.elapsed,
        "config": json.dumps(tr.exp.to_dict()),
        "model": tr.net.state_dict(),
        "ema": tr.ema.state_dict(),
        "optimizer": tr.optimizer.state_dict(),
        "scheduler": tr.scheduler.state_dict(),
        "rng": ckpt.capture_rng(),
        "world": tr.procs.world,
    }


def resume(tr: Trainer, path: Path) -> None:
    """Load a checkpoint into the trainer; refuse one from a different experiment setup."""
    state = ckpt.load_checkpoint(path, map_location="cpu")  # load_state_dict moves to the device
    saved = json.loads(state["config"])
    if _comparable(saved) != _comparable(tr.exp.to_dict()):
        raise input_error(path, "a checkpoint of a different configuration of this experiment",
                          "the settings the checkpoint was written with (only "
                          f"train.{'/'.join(RUNTIME_KEYS)} and sample may change)",
                          "restore those settings, or delete the model folder to train afresh")
    if state["world"] != tr.procs.world:
        warn(path, f"written by {state['world']} processes, resumed with {tr.procs.world}",
             "the remaining steps see a different slice order than an uninterrupted run")
    tr.net.load_state_dict(state["model"])
    tr.ema.load_state_dict(state["ema"])
    tr.optimizer.load_state_dict(state["optimizer"])
    tr.scheduler.load_state_dict(state["scheduler"])
    ckpt.restore_rng(state["rng"])
    tr.step, tr.elapsed = int(state["step"]), float(state["elapsed"])


def out_of_time(tr: Trainer, spent: float) -> bool:
    """Whether train.max_minutes of training (`spent` seconds over all runs) are used up;
    every rank decides alike (rank 0's clock), so all stop at the same step."""
    budget = tr.exp.train.max_minutes * 60.0
    if budget <= 0:
        return False
    if tr.procs.distributed:
        flag = torch.tensor([float(spent >= budget)], device=tr.procs.device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag.item())
    return spent >= budget


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # loader workers share the rule's threads with the main process


def make_loader(dataset: SliceDataset, tr: Trainer, stop: int) -> DataLoader:
    """Loader over this rank's keys for steps tr.step..stop-1."""
    t = tr.exp.train
    sampler = StepBatches(len(dataset), t.batch_size, t.seed, tr.step, stop, tr.procs.rank, tr.procs.world)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=t.num_workers,
                      pin_memory=tr.procs.device.type == "cuda",
                      worker_init_fn=_one_thread,
                      generator=torch.Generator().manual_seed(t.seed))  # keeps the global RNG untouched


@dataclass
class TrainData:
    """The training slices and, on rank 0 when validation is due at all, the validation slices."""

    train_set: SliceDataset
    val_set: SliceDataset | None
    has_val: bool  # the same on every rank: log rows stay in step


@dataclass
class Run:
    """One call's loop: where it writes, where it stops, the loss summed since the last row."""

    out_dir: Path
    start: int
    stop: int
    bar: tqdm
    loss_sum: torch.Tensor
    loss_n: int = 0
    # Looked up at each call, not bound at import, so one clock (the module's `time`) times every reading.
    t0: float = dataclasses.field(default_factory=lambda: time.perf_counter())
    postfix: dict[str, str] = dataclasses.field(default_factory=dict)


def train(exp: ExperimentConfig, dataset: DatasetConfig, h5_dir: Path, splits_path: Path, out_dir: Path,
          threads: int | None = None, *, stop_after: int | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train (or resume) to exp.train.steps, or for at most stop_after steps in this call;
    result.path is model.safetensors when the last step is done, else the checkpoint.

    dataset: the training data's ROIs and pairs, recorded in config.json for new patients;
    on_step(step) is called after every step (a test hook: raising there imitates a kill)."""
    if threads:
        torch.set_num_threads(threads)
    procs = setup_processes()
    try:
        data = load_data(exp, dataset, h5_dir, splits_path, procs)
        tr = build_trainer(exp, procs)
        if procs.is_main:
            log.info(f"{exp.name}: {procs.world} process(es) on {procs.device.type}, "
                     f"{'bf16 autocast' if tr.use_bf16 else 'fp32'} (train.bf16: {json.dumps(exp.train.bf16)})")
        run = open_run(tr, out_dir, stop_after)
        timed_out = False
        for batch in make_loader(data.train_set, tr, run.stop):
            timed_out = after_step(tr, run, data, *train_step(tr, batch))
            if on_step is not None:
                on_step(tr.step)
            if timed_out:
                log.info(f"{exp.name}: train.max_minutes {exp.train.max_minutes} reached at step {tr.step}")
                break
        run.bar.close()
        return finish(tr, run, data, dataset, timed_out)
    finally:
        teardown(procs)


def load_data(exp: ExperimentConfig, dataset: DatasetConfig, h5_dir: Path, splits_path: Path,
              procs: Processes) -> TrainData:
    """The train split (augmented, its size checked against the network) and the validation split."""
    train_set = SliceDataset(case_paths(splits_path, h5_dir, "train"), exp, dataset.rois, dataset.lr_pairs,
                             augment=True)
    exp.network.check_input_size(*train_set.image_size)
    val_paths = case_paths(splits_path, h5_dir, "validation")
    has_val = bool(val_paths) and exp.train.validate_every > 0
    val_set = SliceDataset(val_paths, exp, dataset.rois) if has_val and procs.is_main else None
    if not val_paths and procs.is_main:
        warn(splits_path, "an empty validation split", "training runs without validation")
    return TrainData(train_set, val_set, has_val)


def open_run(tr: Trainer, out_dir: Path, stop_after: int | None) -> Run:
    """Resume from out_dir's checkpoint if there is one; open the log and the progress bar."""
    t, procs = tr.exp.train, tr.procs
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / ckpt.CHECKPOINT
    if ckpt_path.is_file():
        resume(tr, ckpt_path)
        log.info(f"{tr.exp.name}: resuming from step {tr.step} of {t.steps} ({ckpt_path})")
    start = tr.step
    stop = t.steps if stop_after is None else min(t.steps, start + stop_after)
    if procs.is_main:
        open_log(out_dir / LOG_NAME, start)
    # In a log file (a workflow job) a line every 30 s, not one per step.
    bar = tqdm(total=t.steps, initial=start, file=sys.stderr, disable=not procs.is_main,
               desc=tr.exp.name, dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30.0)
    return Run(out_dir, start, stop, bar, torch.zeros((), device=procs.device))


def after_step(tr: Trainer, run: Run, data: TrainData, loss: torch.Tensor, lr: float) -> bool:
    """Sum the loss; log, validate and checkpoint when due; True when the time budget is spent."""
    t, procs = tr.exp.train, tr.procs
    run.loss_sum += loss
    run.loss_n += 1
    run.bar.update(1)
    validating = data.has_val and tr.step % t.validate_every == 0
    seconds = tr.elapsed + time.perf_counter() - run.t0
    timed_out = out_of_time(tr, seconds)
    last = tr.step == run.stop or timed_out
    if tr.step % t.log_every == 0 or validating or last:
        log_row(tr, run, data.val_set if validating else None, lr, seconds)
    if tr.step % t.checkpoint_every == 0 or last:
        tr.elapsed += time.perf_counter() - run.t0
        run.t0 = time.perf_counter()
        if procs.is_main:
            ckpt.save_checkpoint(run.out_dir / ckpt.CHECKPOINT, checkpoint_state(tr))
        barrier(procs)
    return timed_out


def log_row(tr: Trainer, run: Run, val_set: SliceDataset | None, lr: float, seconds: float) -> None:
    """One CSV row (and the bar's text): the mean loss since the last row, validation when given."""
    procs = tr.procs
    loss = all_mean(float(run.loss_sum) / run.loss_n, procs)
    # rank 0 alone validates (val_set is None elsewhere); the others wait at the next all-reduce
    val = validate(tr.ema, val_set, tr.exp, procs.device, tr.use_bf16) if val_set is not None else None
    if procs.is_main:
        run.postfix.update(loss=f"{loss:.4f}", **({"val_mae_gy": f"{val:.3f}"} if val is not None else {}))
        run.bar.set_postfix(run.postfix)
        append_log(run.out_dir / LOG_NAME, {"step": tr.step, "loss": f"{loss:.6g}", "lr": f"{lr:.6g}",
                                  "val_mae_gy": "" if val is None else f"{val:.6g}", "seconds": f"{seconds:.1f}"})
    run.loss_sum.zero_()
    run.loss_n = 0


def finish(tr: Trainer, run: Run, data: TrainData, dataset: DatasetConfig, timed_out: bool) -> TrainResult:
    """Final weights and config.json (rank 0) once the last step (or the time budget) is done."""
    procs = tr.procs
    finished = tr.step >= tr.exp.train.steps or timed_out
    path = run.out_dir / ckpt.CHECKPOINT
    if finished and procs.is_main:
        info = ckpt.model_info(tr.exp, dataset.rois, dataset.lr_pairs, tr.step, data.train_set.image_size,
                               dataclasses.asdict(dataset),
                               ckpt.preprocess_info(data.train_set.cases[0].attrs))
        path = ckpt.save_final(run.out_dir, tr.net, tr.ema, tr.exp, info)
    elif finished:
        path = run.out_dir / ckpt.WEIGHTS
    barrier(procs)
    return TrainResult(path, tr.step, finished, tr.step - run.start, tr.net, tr.ema)

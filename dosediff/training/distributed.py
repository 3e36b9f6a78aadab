"""Processes and devices: single process, or DistributedDataParallel under torchrun.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT); with WORLD_SIZE > 1
the process group uses NCCL on GPUs and gloo on CPU. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dosediff.errors import input_error, log


@dataclass(frozen=True)
class Processes:
    """This process's place in the run and its device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise input_error(f"environment variable {name}", f"value {value!r}", "an integer",
                          "launch with torchrun, which sets it") from None


def setup_processes() -> Processes:
    """Read rank and world size from the environment, pick the device, join the process group."""
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if torch.cuda.is_available():
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
        # one line per process (after the group formed): the log shows how many took part
        log.info(f"process {rank} of {world} joined the {backend} group on {device}")
    return Processes(rank, world, local, device, owns)


def barrier(procs: Processes) -> None:
    if procs.distributed:
        dist.barrier()


def teardown(procs: Processes) -> None:
    if procs.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(value: float, procs: Processes) -> float:
    """Mean of a number over all processes (the logged loss)."""
    if not procs.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=procs.device)
    dist.all_reduce(t)
    return float(t.item()) / procs.world

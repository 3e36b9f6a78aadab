"""DistributedDataParallel on CPU: 2 processes with gloo (as torchrun launches them) train a few
steps and end with identical weights; only rank 0 writes files."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from synthetic_h5 import LR_PAIRS, ROIS, TINY_NETWORK, write_toy_set

TESTS = str(Path(__file__).resolve().parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, exp_dict: dict) -> None:
    # what torchrun sets for each process
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    sys.path.insert(0, TESTS)
    from dosediff.config import DatasetConfig
    from dosediff.experiment import ExperimentConfig
    from dosediff.train import train

    exp = ExperimentConfig.from_mapping(exp_dict, "toy", ROIS)
    result = train(exp, DatasetConfig(rois=ROIS, lr_pairs=LR_PAIRS), Path(root) / "h5", Path(root) / "splits.json",
                   Path(root) / "out", threads=1)
    torch.save({"model": result.model.state_dict(), "ema": result.ema.state_dict(), "step": result.step},
               Path(root) / f"rank{rank}.pt")


def test_two_gloo_processes_hold_identical_weights(tmp_path):
    write_toy_set(tmp_path, n_train=3, n_val=1)
    exp = {"model": "mmfnet", "network": TINY_NETWORK, "sample": {"steps": 2},
           "train": {"steps": 3, "batch_size": 2, "checkpoint_every": 2, "validate_every": 3, "val_max_slices": 2,
                     "log_every": 1, "lr": 1e-3}}
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), exp), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert states[0]["step"] == states[1]["step"] == 3
    init = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    for part in ("model", "ema"):
        a, b = states[0][part], states[1][part]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert all(torch.equal(states[0]["model"][k], v) for k, v in init["model"].items())  # final checkpoint
    rows = (tmp_path / "out" / "train_log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,val_mae_gy,seconds" and len(rows) == 4  # one writer: no duplicate rows
    assert (tmp_path / "out" / "model.safetensors").is_file()

"""Training loop: config, learning, lr schedule, log, kill-and-resume, checkpoints, final weights."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from dosediff import checkpoint as ckpt
from dosediff.errors import InputError
from dosediff.experiment import ExperimentConfig
from dosediff.config import DatasetConfig
from dosediff.train import train
from synthetic_h5 import LR_PAIRS, ROIS, TINY_NETWORK, settings, write_toy_set


def toy(model: str = "mmfnet", **train_settings) -> dict:
    base = {"steps": 6, "batch_size": 4, "checkpoint_every": 2, "validate_every": 3, "val_max_slices": 4,
            "log_every": 1, "lr": 1e-3, "bf16": False}  # the same precision on every CPU
    base.update(train_settings)
    return {"model": model, "network": TINY_NETWORK, "train": base, "sample": {"steps": 2, "batch_size": 4}}


def run(exp_dict: dict, root, out, **kw):
    h5_dir, splits = root
    exp = ExperimentConfig.from_mapping(exp_dict, "toy", ROIS)
    return train(exp, DatasetConfig(rois=ROIS, lr_pairs=LR_PAIRS), h5_dir, splits, out, threads=1, **kw)


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory):
    return write_toy_set(tmp_path_factory.mktemp("toy"), n_train=3, n_val=1)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_experiment_config_resolution_and_errors():
    s = settings({"model": "unet", "condition": "mask", "network": TINY_NETWORK})
    exp = ExperimentConfig.from_settings(s, "toy")
    assert not exp.diffusion and exp.network.arch == "unet" and exp.network.cond_channels == len(ROIS)
    assert ExperimentConfig.from_mapping({"condition": "none"}, "x", ROIS).network.cond_channels == 0
    with pytest.raises(InputError, match="no experiment named"):
        ExperimentConfig.from_settings(s, "other")
    with pytest.raises(InputError, match="network"):
        ExperimentConfig.from_mapping({"network": {"cond_channels": 3}}, "x", ROIS)
    with pytest.raises(InputError, match="fusion_former"):
        ExperimentConfig.from_mapping({"multiscale": False}, "x", ROIS)
    with pytest.raises(InputError, match="diffusion"):
        ExperimentConfig.from_mapping({"model": "unet", "diffusion": True}, "x", ROIS)
    with pytest.raises(InputError, match="condition"):
        ExperimentConfig.from_mapping({"condition": "sdm"}, "x", ROIS)
    with pytest.raises(InputError, match="lr_decay"):
        ExperimentConfig.from_mapping({"train": {"lr_decay_at": 1.5}}, "x", ROIS)
    with pytest.raises(InputError, match="unknown keys"):
        ExperimentConfig.from_mapping({"train": {"stepz": 3}}, "x", ROIS)


def test_regressor_learns_and_logs(toy_set, tmp_path):
    exp = toy("unet", steps=40, validate_every=20, checkpoint_every=40, log_every=5, lr=3e-3, ema_decay=0.8,
              augmentation={"enabled": False})
    result = run(exp, toy_set, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(5, 41, 5))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.5 * losses[0], losses
    val = [float(r["val_mae_gy"]) for r in rows if r["val_mae_gy"]]
    assert len(val) == 2 and val[1] < val[0]
    lrs = [float(r["lr"]) for r in rows]  # x0.1 from step 28 (70 % of 40) on
    assert lrs[:5] == [3e-3] * 5 and lrs[-2:] == pytest.approx([3e-4, 3e-4])
    assert result.finished and result.path == tmp_path / "model.safetensors"


def test_kill_and_resume_matches_uninterrupted(toy_set, tmp_path):
    exp = toy()
    whole = run(exp, toy_set, tmp_path / "whole")
    assert whole.step == 6 and whole.steps_this_run == 6

    class Killed(RuntimeError):
        pass

    def kill_at_3(step: int) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):  # dies between checkpoints (last one at step 2)
        run(exp, toy_set, tmp_path / "killed", on_step=kill_at_3)
    assert ckpt.load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"] == 2
    again = run(exp, toy_set, tmp_path / "killed")
    assert again.step == 6 and again.steps_this_run == 4
    assert same_weights(again.model, whole.model) and same_weights(again.ema, whole.ema)
    rows = list(csv.DictReader(open(tmp_path / "killed" / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]  # the killed run's step 3 row was dropped

    first = run(exp, toy_set, tmp_path / "limited", stop_after=4)  # a max-steps-this-run limit
    assert not first.finished and first.path.name == "checkpoint.pt"
    second = run(exp, toy_set, tmp_path / "limited", stop_after=4)
    assert second.finished and first.steps_this_run + second.steps_this_run == whole.steps_this_run
    assert same_weights(second.ema, whole.ema)
    done = run(exp, toy_set, tmp_path / "limited")  # nothing left to do
    assert done.steps_this_run == 0 and done.step == 6


def test_checkpoint_loads_weights_only_and_resume_refuses_other_config(toy_set, tmp_path):
    run(toy("unet", steps=2), toy_set, tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and json.loads(state["config"])["model"] == "unet"
    assert {"model", "ema", "optimizer", "scheduler", "rng"} <= set(state)
    with pytest.raises(InputError, match="different configuration"):
        run(toy("unet", steps=2, lr=5e-4), toy_set, tmp_path)
    run(toy("unet", steps=2, log_every=2, num_workers=0), toy_set, tmp_path)  # runtime keys may change


def test_rng_capture_restore_roundtrip():
    import random

    import numpy as np

    state = ckpt.capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_safetensors_round_trip(toy_set, tmp_path):
    settings_dict = settings(toy(steps=2, ema_decay=0.5))
    exp = ExperimentConfig.from_settings(settings_dict, "toy")
    path = train(exp, DatasetConfig(**settings_dict["dataset"]), toy_set[0], toy_set[1], tmp_path, threads=1).path
    assert path == tmp_path / "model.safetensors" and (tmp_path / "config.json").is_file()
    state = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")
    model, exp, info = ckpt.load_model(tmp_path)
    assert exp == ExperimentConfig.from_settings(settings_dict, "toy")
    assert info["rois"] == ROIS and info["normalisation"]["dose_max_gy"] == 75.0 and info["step"] == 2
    reference = ckpt.load_model(tmp_path)[0]
    reference.load_state_dict(state["ema"])
    g = torch.Generator().manual_seed(0)
    y, ct, cond = (torch.randn(2, c, 16, 16, generator=g) for c in (1, 1, 3))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        out = model(y, t, ct, cond)
        assert out.abs().max() > 0 and torch.equal(out, reference(y, t, ct, cond))
    raw = ckpt.load_model(tmp_path, raw=True)[0]
    assert all(torch.equal(v, state["model"][k]) for k, v in raw.state_dict().items())


def test_loader_workers_do_not_change_the_run(toy_set, tmp_path):
    """Order and augmentation are keyed by stream position, not by worker: same weights."""
    a = run(toy("unet", steps=3, num_workers=0), toy_set, tmp_path / "w0")
    b = run(toy("unet", steps=3, num_workers=2), toy_set, tmp_path / "w2")
    c = run(toy("unet", steps=3, seed=1), toy_set, tmp_path / "s1")
    assert same_weights(a.model, b.model) and not same_weights(a.model, c.model)


def test_diffusion_loss_decreases(toy_set, tmp_path):
    exp = toy(steps=30, validate_every=0, checkpoint_every=30, log_every=5, lr=3e-3, augmentation={"enabled": False})
    run(exp, toy_set, tmp_path)
    losses = [float(r["loss"]) for r in csv.DictReader(open(tmp_path / "train_log.csv"))]
    assert losses[0] > 0.5 and max(losses[-2:]) < 0.5 * losses[0], losses  # epsilon MSE starts near 1


def test_bf16_autocast_step(toy_set, tmp_path):
    """The bf16 path (default on CUDA) runs; forced on here on the CPU."""
    result = run(toy(steps=2, bf16=True, validate_every=2), toy_set, tmp_path)
    assert result.finished and all(torch.isfinite(p).all() for p in result.model.parameters())


class FakeClock:
    """time.perf_counter stand-in for dosediff.train: 10 s pass at every reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 10.0
        return self.now


def test_max_minutes_stops_at_the_first_step_past_the_budget(toy_set, tmp_path, monkeypatch):
    monkeypatch.setattr("dosediff.train.time", FakeClock())
    exp = toy("unet", steps=1000, checkpoint_every=1000, validate_every=0, max_minutes=1.0)
    first = run(exp, toy_set, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    seconds = [float(r["seconds"]) for r in rows]
    assert first.finished and first.path == tmp_path / "model.safetensors"
    assert 0 < first.step < 1000 and int(rows[-1]["step"]) == first.step
    assert seconds[-1] >= 60.0 > seconds[-2], seconds  # stopped at the first step past 1 minute
    # A larger budget resumes from the checkpoint (the budget counts all runs) and goes on.
    second = run({**exp, "train": {**exp["train"], "max_minutes": 2.0}}, toy_set, tmp_path)
    seconds = [float(r["seconds"]) for r in csv.DictReader(open(tmp_path / "train_log.csv"))]
    assert first.step < second.step < 1000 and seconds[-1] >= 120.0 > seconds[-2]
    with pytest.raises(InputError, match="max_minutes"):
        ExperimentConfig.from_mapping({"train": {"max_minutes": -1}}, "x", ROIS)

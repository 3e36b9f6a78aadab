"""Multi-GPU training through the train rule, on the CPU: given 2 GPUs (`--set-resources
train:gpu=2`) the rule launches torchrun with 2 processes, which join a gloo group and train
the tiny experiment; rank 0 alone writes the checkpoint and the weights, which load. With 1 or
0 GPUs the rule runs one plain `dosediff train`. Slow (the tiny workflow, about a minute on 2
cores): run by .ci/run with `pytest -m slow tests/test_ddp_rule.py`."""

from __future__ import annotations

import re

import pytest
import torch

from dosediff import checkpoint as ckpt
from snakemake_run import snakemake
from tiny_workflow import tiny_config

NAME = "ddprule"
MODEL = f"results/{NAME}/models/tiny"


def _train_command(output: str) -> str:
    """The train job's shell command as snakemake -p prints it."""
    lines = [line.removeprefix("Shell command: ") for line in output.splitlines() if " train --settings " in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.slow
def test_train_rule_with_two_gpus_runs_torchrun_on_two_gloo_processes(tmp_path):
    config = tiny_config(tmp_path, NAME)
    out = snakemake(tmp_path, config, "--cores", "2", f"{MODEL}/model.safetensors", "--set-resources", "train:gpu=2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    command = _train_command(out.stdout + out.stderr)
    print("train job:", command[:120], "...")
    # 2 processes, the rule's threads (capped by --cores 2) shared between them
    assert command.startswith("torchrun --standalone --nproc-per-node 2 -m dosediff train "), command
    assert "--threads 1 " in command, command

    log = (tmp_path / "results" / NAME / "logs" / "train" / "tiny.log").read_text()
    joined = re.findall(r"process (\d) of (\d) joined the gloo group on cpu", log)
    print("train log:", *[line for line in log.splitlines() if "joined" in line or "process(es)" in line], sep="\n  ")
    assert sorted(joined) == [("0", "2"), ("1", "2")], log[-2000:]
    assert "tiny: 2 process(es) on cpu" in log

    model_dir = tmp_path / MODEL
    state = ckpt.load_checkpoint(model_dir / ckpt.CHECKPOINT)  # weights-only unpickler
    assert state["world"] == 2 and state["step"] == 3
    rows = (model_dir / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3"], rows  # one writer, no duplicate rows
    # the final weights are those of the last checkpoint, and load into the network of config.json
    for raw, part in ((True, "model"), (False, "ema")):
        net, exp, info = ckpt.load_model(model_dir, raw=raw)
        assert info["step"] == 3 and exp.name == "tiny"
        assert all(torch.equal(v, state[part][k]) for k, v in net.state_dict().items()), part


def test_train_rule_with_one_or_no_gpu_runs_one_process(tmp_path):
    config = tiny_config(tmp_path, NAME)
    for gpus in ("1", "0"):
        out = snakemake(tmp_path, config, "-n", "--cores", "2", f"{MODEL}/model.safetensors",
                        "--set-resources", f"train:gpu={gpus}")
        assert out.returncode == 0, out.stderr[-4000:]
        command = _train_command(out.stdout + out.stderr)
        assert command.startswith("dosediff train ") and "--threads 2 " in command, (gpus, command)

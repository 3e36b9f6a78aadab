"""Helpers for tests that run the workflow as a user does: a snakemake subprocess in a
scratch folder, the `--settings` JSON of every job it prints, and OpenKBP-layout folders
made of links to the shared patients."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(work: Path, config: Path | None, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`snakemake -p [--configfile=CONFIG] ARGS` on the repository's workflow, run in `work`."""
    env_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=env_bin + os.pathsep + os.environ.get("PATH", ""))
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(work), "-p", *args]
    if config is not None:
        cmd.append(f"--configfile={config}")
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=timeout)


def job_settings(output: str) -> list[tuple[str, dict]]:
    """(stage, settings) of every printed `dosediff <stage> --settings '<json>'` command."""
    found = []
    for line in output.splitlines():
        start = line.find("dosediff ")
        if start < 0 or "--settings '" not in line:
            continue
        words = shlex.split(line[start:].split(" 2> ")[0])
        found.append((words[1], json.loads(words[words.index("--settings") + 1])))
    return found


def assert_settings_from(config: dict, jobs: list[tuple[str, dict]]) -> None:
    """Every job's settings are sections of `config` exactly (so nothing of the embedded
    default's config/config.yaml was merged in), per section and experiment."""
    assert jobs, "no dosediff job with --settings was printed"
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for stage, settings in jobs:
        for name, value in settings.items():
            if name == "experiments":
                for exp, body in value.items():
                    assert body == config["experiments"][exp], (stage, exp, body)
            else:
                assert value == config.get(name, {}), (stage, name, value)
        if config["dataset"]["name"] != default["dataset"]["name"]:
            text, own = json.dumps(settings), json.dumps(config)
            for leaked in ('"PTV": 60', "Spinal Cord", "Oesophagus", '"BODY"', '"prediction": "v"'):
                assert leaked in own or leaked not in text, f"{leaked} from config/config.yaml in {stage}'s settings"


def openkbp_layout(root: Path, shared: Path, placing: dict[str, dict[str, str]]) -> Path:
    """An OpenKBP provided-data folder: placing = {"train-pats": {"pt_1": "train-pats/pt_1"}, ...}
    maps each new patient folder to a shared one (linked, not copied)."""
    for split, patients in placing.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for name, source in patients.items():
            (root / split / name).symlink_to(shared / source, target_is_directory=True)
    return root


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path

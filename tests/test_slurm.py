"""The shipped SLURM profiles against a real single-node scheduler (.ci/slurm-up.sh brings it up;
this test installs nothing). The tiny embedded workflow runs through workflow/profiles/slurm-cpu
up to one trained experiment and one predicted case; sacct must show every job with the
partition, CPUs and memory the profile asked for. The GPU profile is checked by a dry run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "workflow" / "profiles"
NAME = "slurmci"


def _skip(reason: str) -> None:
    """Skip where no scheduler is set up; fail in CI, which brings one up (.ci/run sets the variable)."""
    if os.environ.get("DOSEDIFF_REQUIRE_SLURM"):
        pytest.fail(f"DOSEDIFF_REQUIRE_SLURM is set but {reason}")
    pytest.skip(reason)


def _cluster_up() -> None:
    if not (shutil.which("sbatch") and shutil.which("squeue") and shutil.which("sacct")):
        _skip("sbatch/squeue/sacct not found; run .ci/slurm-up.sh (root, apt) to bring up SLURM")
    if subprocess.run(["squeue"], capture_output=True).returncode != 0:
        _skip("SLURM is installed but not up; run .ci/slurm-up.sh")
    if subprocess.run(["sacct", "-n", "-X"], capture_output=True).returncode != 0:
        _skip("sacct has no accounting (slurmdbd not up); run .ci/slurm-up.sh")


def _tiny_config(tmp: Path) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["dataset"]["name"] = NAME
    cfg["dataset"]["input_dir"] = f"results/{NAME}/dicom"
    cfg["phantom"].update(n_cases=5, shape=[16, 48, 48])
    cfg["preprocess"]["size"] = [32, 32]
    cfg["split"]["fractions"] = [0.6, 0.2, 0.2]
    exp = cfg["experiments"]["dosediff"]
    exp["network"] = {"width": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 8, "num_heads": 2,
                      "fusion_patch_size": [2, 2], "fusion_dim": 16, "fusion_mlp_dim": 32}
    exp["train"] = {"steps": 3, "batch_size": 2, "lr": 1e-3, "checkpoint_every": 3, "validate_every": 3,
                    "val_max_slices": 2, "log_every": 1}
    exp["sample"] = {"steps": 2, "n_samples": 1, "batch_size": 8}
    cfg["experiments"] = {"tiny": exp}
    cfg["report"] = {"tables": {"comparison": ["mean_dose", "tiny"]}, "per_roi": ["tiny"]}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _snakemake(tmp: Path, profile: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile", str(tmp / "tiny.yaml"),
           "--workflow-profile", str(PROFILES / profile), *args]
    out = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=540)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-6000:]}")
    return out


def _rule_field(rule: str, pattern: str) -> int | None:
    """A number from a rule's own declaration (threads, mem_mb) in workflow/rules/*.smk."""
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        body = re.search(rf"\n(?:rule|checkpoint) {rule}:\n(.*?)(?=\n\S|\Z)", smk.read_text(), re.S)
        if body:
            found = re.search(pattern, body.group(1))
            return int(found.group(1)) if found else None
    raise AssertionError(f"rule {rule} not found")


def test_gpu_profile_dry_run_asks_gpus_through_the_plugin(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    _tiny_config(tmp_path)
    out = _snakemake(tmp_path, "slurm", "-n", "--verbose", f"results/{NAME}/splits.json")
    assert "conda" not in out.stderr.lower() or "Error running conda" not in out.stderr
    # the train job's sbatch call appears once the split exists; check the resources snakemake hands over
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    for rule in ("train", "predict"):
        assert "slurm_extra" not in profile["set-resources"][rule]
        assert "cpus_per_task" not in profile["set-resources"][rule]
    assert "cpus_per_task" not in profile["default-resources"] and "slurm_account" in profile["default-resources"]


def _sacct(since: str) -> list[dict]:
    cols = ["JobID", "Comment", "Partition", "AllocCPUS", "ReqMem", "State"]
    text = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, "-o", ",".join(f"{c}%80" for c in cols)],
                          capture_output=True, text=True, check=True).stdout
    print("sacct -X -P -o " + ",".join(cols))
    print(text)
    return [dict(zip(cols, line.split("|"))) for line in text.splitlines() if line.strip()]


def _mem_mb(req: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([MG])n?", req).groups()
    return int(value) * (1024 if unit == "G" else 1)


@pytest.mark.slurm
def test_tiny_workflow_through_slurm_cpu_profile(tmp_path):
    _cluster_up()
    pytest.importorskip("snakemake_executor_plugin_slurm")
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()
    _tiny_config(tmp_path)
    targets = [f"results/{NAME}/models/tiny/model.safetensors", f"results/{NAME}/predictions/tiny/phantom_001.nii.gz"]
    _snakemake(tmp_path, "slurm-cpu", *targets, "--slurm-init-seconds-before-status-checks", "1",
               "--seconds-between-status-checks", "2")
    res = tmp_path / "results" / NAME
    for path in ("models/tiny/model.safetensors", "models/tiny/config.json", "predictions/tiny/phantom_001.nii.gz",
                 "predictions/tiny/phantom_001.json", "logs/train/tiny.log", "logs/predict/tiny/phantom_001.log",
                 "splits.json"):
        assert (res / path).stat().st_size > 0, path
    profile = yaml.safe_load((PROFILES / "slurm-cpu" / "config.yaml").read_text())
    jobs = [j for j in _sacct(since) if j["Comment"].startswith("rule_")]
    rules = {re.match(r"rule_([a-z_]+?)(_wildcards|$)", j["Comment"]).group(1) for j in jobs}
    assert {"phantom", "ingest", "preprocess", "split", "train", "predict"} <= rules, rules
    for job in jobs:
        rule = re.match(r"rule_([a-z_]+?)(_wildcards|$)", job["Comment"]).group(1)
        own = {"mem_mb": _rule_field(rule, r"mem_mb=(\d+)")} if _rule_field(rule, r"mem_mb=(\d+)") else {}
        asked = {**profile["default-resources"], **own, **profile["set-resources"].get(rule, {})}
        assert job["State"] == "COMPLETED", job
        assert job["Partition"] == asked["slurm_partition"], job
        assert _mem_mb(job["ReqMem"]) == asked["mem_mb"], job
        if rule == "train":
            assert int(job["AllocCPUS"]) == _rule_field("train", r"threads: (\d+)") == 8, job

    # an injected bad case: its preprocess fails, snakemake reports it, the other case finishes.
    # phantom_002 is the test case, not needed above: ingest it first, then damage its CT.
    _snakemake(tmp_path, "slurm-cpu", f"results/{NAME}/nifti/phantom_002", "--slurm-init-seconds-before-status-checks",
               "1", "--seconds-between-status-checks", "2")
    (res / "nifti" / "phantom_002" / "ct.nii.gz").write_bytes(b"not a NIfTI file")
    since = subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()
    out = _snakemake(tmp_path, "slurm-cpu", f"results/{NAME}/h5/phantom_002.h5",
                     f"results/{NAME}/h5/phantom_003.h5", "--keep-going", "--forcerun", "preprocess", "--slurm-init-seconds-before-status-checks", "1",
                     "--seconds-between-status-checks", "2", check=False)
    print(out.stderr[-3000:])
    assert out.returncode != 0
    assert "Error in rule preprocess" in out.stderr and "phantom_002" in out.stderr
    assert (res / "h5" / "phantom_003.h5").is_file()
    assert not (res / "h5" / "phantom_002.h5").exists()
    states = {j["State"] for j in _sacct(since) if j["Comment"].startswith("rule_preprocess")}
    assert states == {"COMPLETED", "FAILED"}, states

"""The shipped SLURM profiles against a real single-node scheduler (.ci/slurm-up.sh brings it up;
this test installs nothing). The tiny embedded workflow runs through workflow/profiles/slurm-cpu
up to one trained experiment and one predicted case; sacct must show every job with the
partition, CPUs and memory the profile asked for. The GPU profile (workflow/profiles/slurm)
then trains once more on the `gpu` partition's fake GPU: its sbatch call must carry --gpus=1
and no --gres, and sacct must show gres/gpu=1. Without a scheduler, the GPU profile's dry run
is turned into the sbatch call by the plugin's own builder (test_gpu_profile_dry_run_...)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tiny_workflow import tiny_config

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "workflow" / "profiles"
NAME = "slurmci"
RES = f"results/{NAME}"
QUICK_STATUS = ("--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2")


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


def _section(title: str) -> None:
    print(f"\n== {title}")


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


TRAIN_THREADS = _rule_field("train", r"threads: (\d+)")


class _Resources(dict):
    """job.resources as the plugin reads it: .get(name) and attribute access."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _dry_run_job(output: str, rule: str) -> SimpleNamespace:
    """Threads and resources of the first job of `rule` in a dry run's listing."""
    block = re.search(rf"^rule {rule}:\n(.*?)^Shell command", output, re.S | re.M)
    assert block, f"no {rule} job in the dry run"
    fields = dict(re.findall(r"^\s+(\w+): (.*)$", block.group(1), re.M))
    resources = _Resources()
    for item in fields["resources"].split(", "):
        key, value = item.split("=", 1)
        if value != "<TBD>":
            resources[key] = int(value) if value.isdigit() else value
    return SimpleNamespace(name=rule, threads=int(fields.get("threads", 1)), resources=resources)


def test_gpu_profile_dry_run_asks_gpus_through_the_plugin(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command, safe_quote
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    tiny_config(tmp_path, NAME)
    # A dry run executes locally, which caps threads at --cores; the slurm executor does not.
    out = _snakemake(tmp_path, "slurm", "-n", "--cores", "1000", f"{RES}/models/tiny/model.safetensors")
    assert "Error running conda" not in out.stderr  # no deployment method forced by the profile
    job = _dry_run_job(out.stdout + out.stderr, "train")
    validate_slurm_extra(job)  # what the plugin checks before it builds the call
    params = {"run_uuid": "dryrun", "slurm_logfile": "slurm.log", "comment_str": "rule_train", "workdir": None,
              "account": "", "partition": f"-p {safe_quote(job.resources['slurm_partition'])}"}
    call = get_submit_command(job, params) + set_gres_string(job)
    _section("GPU profile, dry run: the train job's sbatch call as the plugin builds it")
    print(call)
    words = call.split()
    assert "--gpus=1" in words and not any(w.startswith("--gres") for w in words), call
    assert f"--cpus-per-task={TRAIN_THREADS}" in words and "gpu" == job.resources["slurm_partition"], call
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    assert not any("slurm_extra" in r or "cpus_per_task" in r for r in profile["set-resources"].values())
    assert "cpus_per_task" not in profile["default-resources"] and "slurm_account" in profile["default-resources"]


SACCT = ["JobID", "Comment", "Partition", "AllocCPUS", "ReqMem", "AllocTRES", "State"]


def _now() -> str:
    return subprocess.run(["date", "+%Y-%m-%dT%H:%M:%S"], capture_output=True, text=True).stdout.strip()


def _sacct(since: str, title: str) -> list[dict]:
    text = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, "-o", ",".join(f"{c}%120" for c in SACCT)],
                          capture_output=True, text=True, check=True).stdout
    _section(f"{title}: sacct -X -P -o {','.join(SACCT)}")
    print(text.rstrip())
    jobs = [dict(zip(SACCT, line.split("|"))) for line in text.splitlines() if line.strip()]
    for job in jobs:
        found = re.match(r"rule_([a-z_]+?)(_wildcards|$)", job["Comment"])
        job["rule"] = found.group(1) if found else None
    return [j for j in jobs if j["rule"]]


def _sbatch_calls(out: subprocess.CompletedProcess, work: Path, title: str) -> dict[str, str]:
    """The plugin's `sbatch call:` lines (--verbose), one per rule, shortened for reading: no
    wrapped command, job name or log path, the working folder as <work>."""
    calls = {}
    for line in out.stderr.splitlines():
        if "sbatch call:" in line:
            call = line.split("sbatch call:", 1)[1].split(" --wrap=")[0].strip().replace(str(work), "<work>")
            call = re.sub(r" --(job-name|output) \S+", "", re.sub(r"\s+", " ", call))
            calls.setdefault(re.search(r"--comment '?rule_([a-z_]+?)(_wildcards|'| )", call).group(1), call)
    _section(f"{title}: sbatch calls (one per rule)")
    print(*calls.values(), sep="\n")
    return calls


def _mem_mb(req: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([MG])n?", req).groups()
    return int(value) * (1024 if unit == "G" else 1)


def _check_jobs(jobs: list[dict], profile_name: str) -> None:
    """Every job completed with the partition and memory the profile (or the rule) asked for."""
    profile = yaml.safe_load((PROFILES / profile_name / "config.yaml").read_text())
    for job in jobs:
        rule = job["rule"]
        own = {"mem_mb": _rule_field(rule, r"mem_mb=(\d+)")} if _rule_field(rule, r"mem_mb=(\d+)") else {}
        asked = {**profile["default-resources"], **own, **profile["set-resources"].get(rule, {})}
        assert job["State"] == "COMPLETED", job
        assert job["Partition"] == asked["slurm_partition"], job
        assert _mem_mb(job["ReqMem"]) == asked["mem_mb"], job
        if rule == "train":
            assert int(job["AllocCPUS"]) == TRAIN_THREADS == 8, job


@pytest.mark.slurm
def test_tiny_workflow_through_slurm_profiles(tmp_path):
    _cluster_up()
    pytest.importorskip("snakemake_executor_plugin_slurm")
    since = _now()
    tiny_config(tmp_path, NAME)
    targets = [f"{RES}/models/tiny/model.safetensors", f"{RES}/predictions/tiny/phantom_001.nii.gz"]
    out = _snakemake(tmp_path, "slurm-cpu", *targets, "--verbose", *QUICK_STATUS)
    res = tmp_path / RES
    for path in ("models/tiny/model.safetensors", "models/tiny/config.json", "predictions/tiny/phantom_001.nii.gz",
                 "predictions/tiny/phantom_001.json", "logs/train/tiny.log", "logs/predict/tiny/phantom_001.log",
                 "splits.json"):
        assert (res / path).stat().st_size > 0, path
    calls = _sbatch_calls(out, tmp_path, "CPU profile")
    assert f"--cpus-per-task={TRAIN_THREADS}" in calls["train"].split() and "--gpus" not in calls["train"]
    jobs = _sacct(since, "CPU profile")
    assert {"phantom", "prepare", "split", "train", "predict"} <= {j["rule"] for j in jobs}
    _check_jobs(jobs, "slurm-cpu")

    # the GPU profile trains again, on the gpu partition's fake GPU
    since = _now()
    out = _snakemake(tmp_path, "slurm", f"{RES}/models/tiny/model.safetensors", "--forcerun", "train", "--verbose",
                     *QUICK_STATUS)
    calls = _sbatch_calls(out, tmp_path, "GPU profile")
    words = calls["train"].split()
    assert "--gpus=1" in words and f"--cpus-per-task={TRAIN_THREADS}" in words, calls["train"]
    assert not any(w.startswith("--gres") for w in words), calls["train"]
    jobs = _sacct(since, "GPU profile")
    assert [j["rule"] for j in jobs] == ["train"], jobs
    _check_jobs(jobs, "slurm")
    assert "gres/gpu=1" in jobs[0]["AllocTRES"].split(","), jobs[0]
    print("train log:", *re.findall(r".*process\(es\) on .*", (res / "logs" / "train" / "tiny.log").read_text()))

    # an injected bad case: its prepare fails, snakemake reports it, the other case finishes.
    # phantom_002 is the test case, not needed above: export it first, then damage a CT slice.
    _snakemake(tmp_path, "slurm-cpu", f"{RES}/dicom/phantom_002", *QUICK_STATUS)
    (res / "dicom" / "phantom_002" / "CT" / "CT.3.dcm").write_bytes(b"not a DICOM file")
    since = _now()
    out = _snakemake(tmp_path, "slurm-cpu", f"{RES}/h5/phantom_002.h5", f"{RES}/h5/phantom_003.h5", "--keep-going",
                     "--forcerun", "prepare", *QUICK_STATUS, check=False)
    _section(f"a damaged case under --keep-going: snakemake exits {out.returncode}, and reports")
    print(*[line for line in out.stderr.splitlines() if re.search(r"^Error in rule|message:|Exiting", line)], sep="\n")
    print("its rule log:", (res / "logs" / "prepare" / "phantom_002.log").read_text().strip()[-600:])
    assert out.returncode != 0
    assert "Error in rule prepare" in out.stderr and "phantom_002" in out.stderr
    assert (res / "h5" / "phantom_003.h5").is_file() and (res / "nifti" / "phantom_003").is_dir()
    assert not (res / "h5" / "phantom_002.h5").exists() and not (res / "nifti" / "phantom_002").exists()
    states = {j["State"] for j in _sacct(since, "damaged case") if j["rule"] == "prepare"}
    assert states == {"COMPLETED", "FAILED"}, states

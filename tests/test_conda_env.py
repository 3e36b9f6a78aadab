"""The rule environment installs this checkout wherever conda creates it. Without conda, do what
snakemake does: copy the env file and its post-deploy script into an unrelated folder (the conda
prefix), run pip from another working directory, and check where the package resolves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "workflow" / "envs"


def test_env_file_has_no_relative_install_and_has_snakemake():
    env = yaml.safe_load((ENVS / "dosediff.yaml").read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert not any(r.startswith("-e") or r.startswith(".") for r in pip), pip
    assert any(str(d).startswith("snakemake") for d in deps if isinstance(d, str))


def test_post_deploy_from_copy_in_unrelated_folder_installs_checkout(tmp_path):
    prefix, cwd = tmp_path / "shared_envs", tmp_path / "elsewhere"
    prefix.mkdir(), cwd.mkdir()
    shutil.copy(ENVS / "dosediff.yaml", prefix / "0123abcd.yaml")
    script = prefix / "0123abcd.post-deploy.sh"
    shutil.copy(ENVS / "dosediff.post-deploy.sh", script)
    venv = tmp_path / "env"  # stands in for the conda env: its python first on PATH
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # conda gives the env pip, setuptools and the dependencies; here they come from this test's site
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}", DOSEDIFF_SOURCE=str(REPO),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    out = subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    probe = "import importlib.util, json; print(json.dumps(importlib.util.find_spec('dosediff').origin))"
    origin = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=cwd, env=env,
                            capture_output=True, text=True, check=True).stdout
    print("dosediff resolves to", origin.strip())
    assert Path(json.loads(origin)) == REPO / "dosediff" / "__init__.py"
    # installed into this env (not found through the test's own site): pip's record of the source
    record = json.loads(next(site.glob("dosediff-*.dist-info/direct_url.json")).read_text())
    print("installed from", record)
    assert record["url"] == REPO.as_uri() and record["dir_info"].get("editable") is True


def test_post_deploy_without_source_names_the_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DOSEDIFF_SOURCE"}
    out = subprocess.run(["bash", str(ENVS / "dosediff.post-deploy.sh")], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "DOSEDIFF_SOURCE" in out.stderr and "Fix" in out.stderr

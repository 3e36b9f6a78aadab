"""The Snakemake workflow as a user runs it: dry run, lint-clean rules, --keep-going past a
bad patient, and no patient-identifying header value in any output or log."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dosediff.config import PhantomConfig
from dosediff.phantom import SENTINELS, write_phantom_case

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env_bin = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=env_bin + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_dry_run_lists_data_stages():
    out = _run([*SNAKEMAKE, "-n", "--forceall", "--cores", "1"], REPO)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    for rule in ("phantom", "prepare", "split"):
        assert rule in text, f"rule {rule} missing from the dry run:\n{text}"


def _dicom_config(tmp: Path, input_dir: Path) -> Path:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"].update(name="site", source="dicom", input_dir=str(input_dir),
                             pseudonyms={"MRN12345": "anon_c"})
    config["preprocess"]["size"] = [32, 32]
    config.pop("experiments", None)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_keep_going_and_no_patient_data_in_outputs(tmp_path):
    """Three DICOM-RT patients, one with a stray non-DICOM file: the two good ones go
    through prepare (ingest and preprocess), the bad one fails with a message naming the file and
    leaves no partial output, and no sentinel header value reaches results or logs."""
    data = tmp_path / "exports"
    cfg = PhantomConfig(n_cases=3, shape=[12, 40, 40], spacing=[5.0, 5.0, 5.0], n_beams=5)
    # The third export's folder is named by a (made-up) record number, mapped to a pseudonym.
    for i, (folder, case) in enumerate([("anon_a", "anon_a"), ("anon_b", "anon_b"), ("MRN12345", "anon_c")], 1):
        write_phantom_case(data / folder, case, i, cfg)
    (data / "anon_b" / "notes.txt").write_text("exported by hand\n")

    work = tmp_path / "work"
    work.mkdir()
    config = _dicom_config(work, data)
    targets = [f"results/site/h5/{c}.h5" for c in ("anon_a", "anon_b", "anon_c")]
    out = _run(
        [*SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(work),
         "--configfile", str(config), "--cores", "2", "--keep-going", *targets],
        REPO,
    )
    assert out.returncode != 0, "the bad patient must fail the run"
    results = work / "results" / "site"
    assert (results / "h5" / "anon_a.h5").is_file() and (results / "h5" / "anon_c.h5").is_file()
    assert not (results / "nifti" / "anon_b").exists() and not (results / "h5" / "anon_b.h5").exists()
    leftovers = [p for p in (results / "nifti").iterdir() if p.name.startswith(".")]
    assert not leftovers, f"partial output left behind: {leftovers}"
    data_files = [p for p in results.rglob("*") if p.is_file() and "logs" not in p.parts]
    assert not [p for p in data_files if "MRN12345" in p.name or b"MRN12345" in p.read_bytes()]
    log = (results / "logs" / "prepare" / "anon_b.log").read_text()
    assert "notes.txt" in log and "anon_b" in log and "Fix:" in log, log

    # Every file the run wrote (results, logs, snakemake's own metadata), as bytes.
    for path in [*work.rglob("*")]:
        if path.is_file() and path != config:
            blob = path.read_bytes()
            if path.suffix == ".gz":
                blob = gzip.decompress(blob)
            for sentinel in SENTINELS:
                assert sentinel.encode() not in blob, f"{sentinel!r} leaked into {path}"
    shutil.rmtree(work / ".snakemake", ignore_errors=True)

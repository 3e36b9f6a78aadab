"""Issue 9, defects 1-4: names from folders and settings never reach a shell unquoted, never
delete outside a case, never drop a patient silently and never write outside a case folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dosediff.atomic import atomic_dir, atomic_file, remove_stale_temporaries
from dosediff.config import DatasetConfig, PhantomConfig
from dosediff.errors import InputError
from dosediff.names import check_name, is_safe_name
from dosediff.phantom import write_phantom_case

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")]
SMALL = PhantomConfig(n_cases=2, shape=[12, 32, 32], spacing=[6.0, 5.0, 5.0], n_beams=3)


def _snakemake(work: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([*SNAKEMAKE, "--directory", str(work), "--configfile", str(path), "--cores", "1", *args],
                          cwd=work, capture_output=True, text=True, env=env, timeout=300)


def _site_config(input_dir: Path, **dataset) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"].update(name="site", source="dicom", input_dir=str(input_dir), **dataset)
    config["preprocess"]["size"] = [16, 16]
    config.pop("experiments", None)
    config.pop("report", None)
    return config


def test_every_shell_placeholder_is_quoted():
    """Defect 1 (static half): every value a rule puts into its shell command is `:q`-quoted."""
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for line in path.read_text().splitlines():
            if line.strip().startswith('"dosediff '):
                fields = re.findall(r"\{([^{}]+)\}", line)
                unquoted = [f for f in fields if not f.endswith(":q") and f != "threads"]
                assert not unquoted, f"{path.name}: unquoted {unquoted} in {line.strip()}"


def test_hostile_folder_names_run_no_code(tmp_path):
    """Defect 1: folders named `pt$(touch PWNED)` and `DOE JOHN 7731`, mapped to pseudonyms,
    are ingested as data: no command runs, no argument splits, and no job's command,
    log or Snakemake record carries the folder names."""
    data, work = tmp_path / "exports", tmp_path / "work"
    work.mkdir()
    folders = {"pt$(touch PWNED)": "anon_1", "DOE JOHN 7731": "anon_2"}
    for i, name in enumerate(folders, 1):
        write_phantom_case(data / name, f"c{i}", i, SMALL)
    out = _snakemake(work, _site_config(data, pseudonyms=folders), "-p",
                     "results/site/nifti/anon_1", "results/site/nifti/anon_2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()
    for case in folders.values():
        assert (work / "results" / "site" / "nifti" / case / "ct.nii.gz").is_file()
    records = [p for p in work.rglob("*") if p.is_file() and p.name != "config.yaml"]
    for p in records:
        blob = p.read_bytes()
        assert b"PWNED" not in blob and b"JOHN" not in blob, f"a folder name reached {p}"
    assert "PWNED" not in out.stdout + out.stderr and "JOHN" not in out.stdout + out.stderr


def test_dotdot_pseudonym_is_refused_and_deletes_nothing(tmp_path):
    """Defect 2: `pseudonyms: {MRN777: ".."}` is a config error; atomic_dir refuses `..`."""
    data, work = tmp_path / "exports", tmp_path / "work"
    work.mkdir()
    write_phantom_case(data / "MRN777", "c1", 1, SMALL)
    keep = work / "results" / "site" / "h5" / "other.h5"
    keep.parent.mkdir(parents=True)
    keep.write_text("another case's finished output")
    out = _snakemake(work, _site_config(data, pseudonyms={"MRN777": ".."}), "-n")
    assert out.returncode != 0 and "pseudonyms" in out.stdout + out.stderr
    assert keep.is_file()
    with pytest.raises(InputError, match=r"'\.\.'"):
        with atomic_dir(work / "results" / "site" / "nifti" / ".."):
            pass
    assert keep.is_file()
    with pytest.raises(InputError):
        DatasetConfig(rois=["PTV"], pseudonyms={"MRN777": ".."})


def test_duplicate_pseudonyms_are_refused(tmp_path):
    """Defect 3: two folders on one pseudonym stop the workflow with a message naming the
    pseudonym (not the folders, which may be patient IDs)."""
    data, work = tmp_path / "exports", tmp_path / "work"
    work.mkdir()
    for i, name in enumerate(["MRN1", "MRN2"], 1):
        write_phantom_case(data / name, f"c{i}", i, SMALL)
    out = _snakemake(work, _site_config(data, pseudonyms={"MRN1": "anon", "MRN2": "anon"}), "-n")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "['anon']" in text and "more than one folder" in text, text
    assert "MRN1" not in text and "MRN2" not in text
    # A pseudonym equal to another folder's own name is a collision too.
    write_phantom_case(data / "anon_x", "c3", 3, SMALL)
    out = _snakemake(work, _site_config(data, pseudonyms={"MRN1": "anon_x", "MRN2": "anon_y"}), "-n")
    assert out.returncode != 0 and "two patient folders give case id 'anon_x'" in out.stdout + out.stderr
    with pytest.raises(InputError, match="more than one folder"):
        DatasetConfig(rois=["PTV"], pseudonyms={"a": "x", "b": "x"})


@pytest.mark.parametrize("roi", ["../../../escape_roi", "Lung/L", "Lung L", "..", "a;b", "$(x)", ""])
def test_unsafe_roi_names_are_refused(roi):
    """Defect 4 (and the `Lung/L` traceback of 7): ROI names become file names, so they are checked."""
    with pytest.raises(InputError, match="setting dataset.rois"):
        DatasetConfig(rois=["PTV", roi], aliases={"PTV": ["ptv"]})


def test_safe_names():
    for good in ["PTV", "anon_001", "pt_1", "Lung.L", "GTV-1"]:
        assert is_safe_name(good) and check_name(good, "x") == good
    for bad in ["..", "a..b", ".hidden", "-rf", "a b", "a/b", "a\\b", "x$(y)", "a`b`", "é", "a" * 200, 3, None]:
        assert not is_safe_name(bad), bad


def test_schema_refuses_unknown_top_level_section(tmp_path):
    """Defect 8: a misspelled top-level section is a config error, not ignored."""
    work = tmp_path / "work"
    work.mkdir()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["preprocesss"] = {"size": [32, 32]}
    out = _snakemake(work, config, "-n")
    assert out.returncode != 0 and "preprocesss" in out.stdout + out.stderr


def test_stale_temporaries_are_removed(tmp_path):
    """Defect 9: the temporaries of a killed job are removed when the same target is written again."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_file = tmp_path / f".checkpoint.pt.tmp-{dead.pid}"
    stale_file.write_bytes(b"x" * 100)
    stale_dir = tmp_path / f".case.tmp-{dead.pid}"
    stale_dir.mkdir()
    live = tmp_path / f".checkpoint.pt.tmp-{os.getppid()}"  # a running process: kept
    live.write_bytes(b"y")
    with atomic_file(tmp_path / "checkpoint.pt") as tmp:
        tmp.write_bytes(b"new")
    with atomic_dir(tmp_path / "case") as tmp:
        (tmp / "f").write_text("ok")
    assert not stale_file.exists() and not stale_dir.exists() and live.exists()
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"new"
    assert remove_stale_temporaries(tmp_path / "checkpoint.pt") == []


def test_unsafe_unmapped_folder_is_skipped_with_a_message(tmp_path):
    """Defect 8: a folder whose name is no safe case id (a space) no longer blocks the others
    with a MissingInputException; it is skipped with the cause and the fix."""
    data, work = tmp_path / "exports", tmp_path / "work"
    work.mkdir()
    write_phantom_case(data / "anon_ok", "c1", 1, SMALL)
    (data / "bad name").mkdir()
    out = _snakemake(work, _site_config(data, exclude_cases=["nobody"]), "-n")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "skipped" in text and "dataset.pseudonyms" in text and "prepare" in text
    assert "exclude_cases: ['nobody'] name no case" in text

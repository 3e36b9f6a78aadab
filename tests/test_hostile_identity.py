"""Issue 9, defect 6: no patient ID or name in messages, logs or workflow records, also when
the source files are named by the patient's ID (as Eclipse exports them) and a case fails."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dosediff.errors import InputError
from dosediff.ingest import ingest_case
from dosediff.phantom import SENTINELS, write_phantom_case
from test_hostile_input import DATASET, REPO, SMALL, _ct, _edit, _raw, src  # noqa: F401 (src: fixture)


def _eclipse_names(folder: Path, patient_id: str) -> None:
    """File names as Eclipse exports them: CT.<PatientID>.Image <n>.dcm, RS.<PatientID>.dcm, ..."""
    for p in sorted(folder.rglob("*.dcm")):
        stem = p.name.split(".")
        new = f"CT.{patient_id}.Image {stem[1]}.dcm" if stem[0] == "CT" else f"{stem[0]}.{patient_id}.dcm"
        p.rename(p.with_name(new))


def test_file_names_carrying_the_patient_id_are_hidden(src, tmp_path):
    """Defect 6: a damaged file named by the patient's ID (Eclipse style), in a folder not
    named by it: the message names the file with the ID replaced, even when the damaged file
    is the first one read (the other files' headers give the ID)."""
    folder = tmp_path / "patient_7"
    shutil.copytree(src, folder)
    _eclipse_names(folder, "SENTINEL-ID-0001")
    first = folder / "CT" / "CT.SENTINEL-ID-0001.Image 1.dcm"
    first.write_bytes(first.read_bytes()[:2000])
    with pytest.raises(InputError) as err:
        ingest_case(folder, "patient_7", DATASET, tmp_path / "out" / "patient_7")
    msg = str(err.value)
    assert "<patient_7>/CT/CT.<patient id>.Image 1.dcm" in msg and "SENTINEL" not in msg, msg
    assert not (tmp_path / "out" / "patient_7").exists()


def test_workflow_run_on_folders_named_by_patient_id_leaks_nothing(tmp_path):
    """Folders named by the patients' IDs (with pseudonyms), Eclipse-style file names carrying
    the ID, and a failing patient whose error names its damaged file: no ID, name or sentinel
    in any output, log (the failing job's included) or .snakemake record."""
    data, work = tmp_path / "exports", tmp_path / "work"
    work.mkdir()
    pseudonyms = {}
    for i in (1, 2, 3):
        folder = data / f"SENTINEL-ID-{i:04d}"
        write_phantom_case(folder, f"anon_{i}", i, SMALL)
        pseudonyms[folder.name] = f"anon_{i}"
    _edit(_ct(data / "SENTINEL-ID-0003"), lambda ds: _raw(ds, "RescaleSlope", "abc"))  # the failing patient
    for folder in pseudonyms:
        _eclipse_names(data / folder, folder)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"].update(name="site", source="dicom", input_dir=str(data), pseudonyms=pseudonyms)
    config["preprocess"]["size"] = [16, 16]
    for key in ("experiments", "report"):
        config.pop(key, None)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    out = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
                          "--directory", str(work), "--configfile", str(work / "config.yaml"), "--cores", "2",
                          "--keep-going", *[f"results/site/h5/anon_{i}.h5" for i in (1, 2, 3)]],
                         cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode != 0
    results = work / "results" / "site"
    assert (results / "h5" / "anon_1.h5").is_file() and not (results / "nifti" / "anon_3").exists()
    failed_log = (results / "logs" / "prepare" / "anon_3.log").read_text()
    assert "RescaleSlope" in failed_log and "CT.<patient id>.Image 4.dcm" in failed_log, failed_log
    sources = results / "sources"
    assert sorted(p.name for p in sources.iterdir()) == ["anon_1", "anon_2", "anon_3"]
    checked = 0
    for path in work.rglob("*"):
        if sources in path.parents or not path.is_file() or path.name == "config.yaml":
            continue
        blob = path.read_bytes()
        blob = gzip.decompress(blob) if path.suffix == ".gz" else blob
        for sentinel in SENTINELS:
            assert sentinel.encode() not in blob, f"{sentinel!r} leaked into {path.relative_to(work)}"
        checked += 1
    assert checked > 20 and ".snakemake" in {p.parts[0] for p in
                                             (q.relative_to(work) for q in work.rglob("*") if q.is_file())}
    for sentinel in SENTINELS:
        assert sentinel not in out.stdout + out.stderr, f"{sentinel!r} in snakemake's console output"

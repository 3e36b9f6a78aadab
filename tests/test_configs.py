"""Shipped configs stand alone: with `--configfile`, every job receives exactly that config's
sections (nothing of the embedded default's config/config.yaml), in a dry run and in one
real ingest; and the evaluated split follows split.evaluate_on (auto: test, else validation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dosediff.config import PhantomConfig, SplitConfig
from dosediff.data.splits import make_splits
from dosediff.errors import InputError
from dosediff.phantom import make_phantom, write_phantom_dicom
from snakemake_run import REPO, assert_settings_from, job_settings, openkbp_layout, snakemake, write_config

TINY_PHANTOM = PhantomConfig(n_cases=1, shape=[12, 40, 40], spacing=[5.0, 5.0, 5.0], n_beams=5)


def test_evaluation_split_auto_and_explicit():
    full = make_splits(["pt_1", "pt_2", "pt_201", "pt_241"], "openkbp", SplitConfig())
    sample = make_splits(["pt_1", "pt_2", "pt_201"], "openkbp", SplitConfig())
    assert full["test"] == ["pt_241"] and SplitConfig().evaluation_split(full) == "test"
    assert sample["test"] == [] and SplitConfig().evaluation_split(sample) == "validation"
    assert SplitConfig(evaluate_on="validation").evaluation_split(full) == "validation"
    with pytest.raises(InputError, match="split.evaluate_on.*no patients"):
        SplitConfig(evaluate_on="test").evaluation_split(sample)
    with pytest.raises(InputError, match="split.evaluate_on"):
        SplitConfig(evaluate_on="best")


def phantom_export(folder: Path, dataset: dict) -> None:
    """One tiny phantom patient whose RTSTRUCT names are the config's (required ROIs first);
    phantom ROIs left over are dropped."""
    patient = make_phantom(1, TINY_PHANTOM)
    patient.case_id = folder.name
    wanted = list(dataset.get("required_rois", [])) + [r for r in dataset["rois"] if r not in dataset.get("required_rois", [])]
    names = [(dataset.get("aliases", {}).get(r) or [r])[0] for r in wanted]
    phantom_rois = list(patient.contours)
    patient.roi_names = dict(zip(phantom_rois, names))
    patient.contours = {r: patient.contours[r] for r in phantom_rois[: len(names)]}
    write_phantom_dicom(patient, folder)


def dataset_input(name: str, config: dict, tmp: Path, openkbp_dir: Path) -> tuple[Path, str]:
    """A small input folder in the layout the config expects, and one case id in it."""
    if config["dataset"]["source"] == "openkbp":
        placing = {"train-pats": {"pt_1": "train-pats/pt_1", "pt_2": "train-pats/pt_2"},
                   "validation-pats": {"pt_201": "validation-pats/pt_201"}}
        return openkbp_layout(tmp / "provided-data", openkbp_dir, placing), "pt_1"
    data = tmp / "exports"
    for case in ("anon_1", "anon_2", "anon_3"):
        phantom_export(data / case, config["dataset"])
    return data, "anon_1"


@pytest.mark.slow  # about 25 s per config on an idle 2-core machine (snakemake start-up, one prepare)
@pytest.mark.parametrize("name", ["openkbp", "openkbp-cpu", "breast", "npc"])
def test_shipped_config_stands_alone(name, tmp_path, openkbp_dir):
    config = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    input_dir, case = dataset_input(name, config, tmp_path, openkbp_dir)
    config["dataset"]["input_dir"] = str(input_dir)
    work = tmp_path / "work"
    work.mkdir()
    path = write_config(work / f"{name}-local.yaml", config)

    dry = snakemake(work, path, "-n", "--forceall", "--cores", "1")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_settings(dry.stdout + dry.stderr)
    assert {"prepare", "split"} <= {stage for stage, _ in jobs}
    assert_settings_from(config, jobs)

    dataset = config["dataset"]["name"]
    target = f"results/{dataset}/nifti/{case}"
    real = snakemake(work, None, target, "--cores", "1", "--configfile", str(path))  # target before --configfile
    assert real.returncode == 0, real.stderr[-3000:]
    jobs = job_settings(real.stdout + real.stderr)
    assert [stage for stage, _ in jobs] == ["prepare"]
    assert_settings_from(config, jobs)
    info = json.loads((work / target / "case.json").read_text())
    assert set(info["rois"]) <= set(config["dataset"]["rois"]) and info["rois"]
    assert set(config["dataset"].get("required_rois", [])) <= set(info["rois"])

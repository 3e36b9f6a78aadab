"""New patients: a model trained on phantom patients (through `dosediff train`'s own code)
predicts patients it never saw, as the prediction-only workflow runs it: ingest without dose
and with the model's ROI names, the model's preprocessing, prediction, the planner report.

The model is tiny (a few steps, width 16, 32x32 slices): what is checked is the plumbing
(files, geometry, frame of reference, messages), not dose accuracy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
import yaml

from dosediff.config import PhantomConfig, PreprocessConfig
from dosediff.data.splits import write_splits
from dosediff.errors import InputError
from dosediff.experiment import ExperimentConfig
from dosediff.ingest import ingest_case
from dosediff.io.nifti import read_case, read_image
from dosediff.model_spec import read_model_spec
from dosediff.new_patients import ingest_new_patient, preprocess_new_patient, report_new_patient, resolve_goals
from dosediff.phantom import SENTINELS, phantom_dataset_config, write_phantom_case
from dosediff.predict import predict_case
from dosediff.preprocess.pipeline import preprocess_case
from dosediff.train import train
from synthetic_h5 import TINY_NETWORK

REPO = Path(__file__).resolve().parents[1]
PHANTOM = PhantomConfig(n_cases=3, seed=0, shape=[16, 48, 48], spacing=[5.0, 7.0, 7.0], n_beams=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny DoseDiff trained for 4 steps on three phantom patients: model.safetensors + config.json."""
    root = tmp_path_factory.mktemp("trained")
    dataset = phantom_dataset_config()
    cases = [f"phantom_{i:03d}" for i in range(1, 4)]
    for i, case in enumerate(cases, start=1):
        write_phantom_case(root / "dicom" / case, case, i, PHANTOM)
        ingest_case(root / "dicom" / case, case, dataset, root / "nifti" / case)
        preprocess_case(read_case(root / "nifti" / case), dataset,
                        PreprocessConfig(size=[32, 32], representations=["psdm"]), root / "h5" / f"{case}.h5")
    write_splits(root / "splits.json", {"train": cases[:2], "validation": [], "test": cases[2:]})
    experiment = {"model": "mmfnet", "prediction": "v", "network": TINY_NETWORK,
                  "train": {"steps": 4, "batch_size": 4, "checkpoint_every": 4, "validate_every": 0, "log_every": 2,
                            "bf16": False},
                  "sample": {"steps": 2, "batch_size": 8, "bf16": False}}
    exp = ExperimentConfig.from_mapping(experiment, "tiny", dataset.rois)
    train(exp, dataset, root / "h5", root / "splits.json", root / "model", threads=1)
    return root / "model"


def new_patient(folder: Path, index: int, keep_dose: bool = False) -> Path:
    """A phantom patient the model never saw, its RTDOSE deleted unless keep_dose."""
    write_phantom_case(folder, folder.name, index, PHANTOM)
    if not keep_dose:
        (folder / "RD.dcm").unlink()
    return folder


def rename_rois(rtstruct: Path, names: dict[str, str]) -> None:
    ds = pydicom.dcmread(rtstruct)
    for item in ds.StructureSetROISequence:
        item.ROIName = names.get(str(item.ROIName), item.ROIName)
    ds.save_as(rtstruct)


def test_config_json_describes_prediction(model_dir):
    spec = read_model_spec(model_dir)
    info = json.loads((model_dir / "config.json").read_text())
    assert info["format_version"] == 2 and info["dosediff_version"]
    assert spec.dataset.rois == phantom_dataset_config().rois and spec.dataset.required_rois == ["PTV"]
    assert spec.dataset.targets == {"PTV": 60.0} and spec.dataset.prescription_gy == 60.0
    assert spec.preprocess.size == [32, 32] and spec.preprocess.representations == ["psdm"]
    assert info["preprocess"]["body_threshold_hu"] == PreprocessConfig().body_threshold_hu
    assert info["schedule"] == {"kind": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert info["experiment"]["sample"]["steps"] == 2 and info["normalisation"]["dose_max_gy"] == 75.0


def test_format_1_folder_loads_and_other_versions_stop(model_dir, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    info = json.loads((old / "config.json").read_text())
    for key in ("dataset", "preprocess", "schedule"):
        info.pop(key)
    (old / "config.json").write_text(json.dumps({**info, "format_version": 1}))
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        spec = read_model_spec(old)
    assert "format-1 model folder" in caplog.text
    assert spec.preprocess.size == [32, 32] and spec.preprocess.representations == ["psdm"]
    (old / "config.json").write_text(json.dumps({**info, "format_version": 99, "dosediff_version": "9.0"}))
    with pytest.raises(InputError, match=r"old/config.json: format_version 99 \(written by dosediff 9.0\); "
                                         r"expected a format this dosediff .* reads: \[1, 2\]\. Fix: predict with"):
        read_model_spec(old)
    with pytest.raises(InputError, match=r"case new_009: .*format_version 99"):
        ingest_new_patient(tmp_path, "new_009", {}, old, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_model_folder_without_config_json(model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_dir / "model.safetensors", bare)
    patient = new_patient(tmp_path / "new_001", 101)
    with pytest.raises(InputError, match=r"case new_001: .*bare/config.json: no such file; expected config.json "
                                         r"written by `dosediff train`.*Fix: point at the experiment's model folder"):
        ingest_new_patient(patient, "new_001", {}, bare, tmp_path / "nifti" / "new_001")
    assert not (tmp_path / "nifti").exists()


def test_patient_without_the_models_rois_and_other_aliases(model_dir, tmp_path):
    patient = new_patient(tmp_path / "new_002", 102)
    names = {"PTV": "PTV_60Gy", "SpinalCord": "Medulla", "Spinal Cord": "Medulla", "Cord": "Medulla",
             "SPINAL_CORD": "Medulla"}
    rename_rois(patient / "RS.dcm", names)
    out = tmp_path / "nifti" / "new_002"
    with pytest.raises(InputError) as err:
        ingest_new_patient(patient, "new_002", {"name": "other_site", "source": "dicom"}, model_dir, out)
    text = str(err.value)
    assert f"model {model_dir}" in text and "case new_002" in text and "required ROIs ['PTV']" in text
    assert "'PTV_60Gy'" in text  # the patient's unmatched name
    assert 'Alias line to add to the prediction config: `dataset: {aliases: {PTV: ["<the patient\'s name' in text
    assert not out.exists() and not list(out.parent.glob(".*")) if out.parent.exists() else True

    # The same model folder with a config that names the ROIs through other aliases.
    user = {"name": "other_site", "source": "dicom", "aliases": {"PTV": ["PTV_60Gy"], "SpinalCord": ["Medulla"]}}
    ingest_new_patient(patient, "new_002", user, model_dir, out)
    case = read_case(out)
    assert list(case.masks) == read_model_spec(model_dir).dataset.rois and case.dose is None
    preprocess_new_patient(out, model_dir, tmp_path / "new_002.h5")
    manifest = predict_case(model_dir, tmp_path / "new_002.h5", out, tmp_path / "pred" / "new_002.nii.gz")
    dose, geo = read_image(tmp_path / "pred" / "new_002.nii.gz")
    assert geo.same_grid(case.geometry) and np.isfinite(dose).all() and manifest["slices_sampled"] > 0

    with pytest.raises(InputError, match=r"dataset.aliases: ROIs \['Spine'\] are not ROIs of model"):
        ingest_new_patient(patient, "x", {**user, "aliases": {"Spine": ["Medulla"]}}, model_dir, tmp_path / "x")
    with pytest.raises(InputError, match=r"setting dataset.rois: value \['PTV'\], but model .* was trained with"):
        ingest_new_patient(patient, "x", {**user, "rois": ["PTV"]}, model_dir, tmp_path / "x")


def test_patient_without_rtstruct(model_dir, tmp_path):
    patient = new_patient(tmp_path / "new_003", 103)
    (patient / "RS.dcm").unlink()
    out = tmp_path / "nifti" / "new_003"
    with pytest.raises(InputError, match=r"model .* needs the patient's contours; case new_003: .*no RTSTRUCT "
                                         r"file; expected a structure set with \['PTV'\]\. Fix: export the structure"):
        ingest_new_patient(patient, "new_003", {}, model_dir, out)
    assert not out.exists()


def test_missing_optional_roi_warns_and_gives_zero_channel(model_dir, tmp_path, caplog):
    patient = new_patient(tmp_path / "new_004", 104)
    ds = pydicom.dcmread(patient / "RS.dcm")
    heart = [r.ROINumber for r in ds.StructureSetROISequence if str(r.ROIName).lower() == "heart"]
    ds.StructureSetROISequence = [r for r in ds.StructureSetROISequence if r.ROINumber not in heart]
    ds.ROIContourSequence = [r for r in ds.ROIContourSequence if r.ReferencedROINumber not in heart]
    ds.RTROIObservationsSequence = [r for r in ds.RTROIObservationsSequence if r.ReferencedROINumber not in heart]
    ds.save_as(patient / "RS.dcm")
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        ingest_new_patient(patient, "new_004", {}, model_dir, tmp_path / "nifti" / "new_004")
    assert "ROIs ['Heart'] of model" in caplog.text and "all zero" in caplog.text
    preprocess_new_patient(tmp_path / "nifti" / "new_004", model_dir, tmp_path / "new_004.h5")
    import h5py

    with h5py.File(tmp_path / "new_004.h5") as f:
        k = list(f.attrs["roi_names"]).index("Heart")
        assert not np.any(f["psdm"][k]) and np.any(f["psdm"][0])


def test_rtdose_of_another_frame_of_reference_is_ignored(model_dir, tmp_path, caplog):
    patient = new_patient(tmp_path / "new_005", 105, keep_dose=True)
    ds = pydicom.dcmread(patient / "RD.dcm")
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(patient / "RD.dcm")
    with caplog.at_level(logging.WARNING, logger="dosediff"):
        ingest_new_patient(patient, "new_005", {}, model_dir, tmp_path / "nifti" / "new_005")
    assert "RD.dcm: FrameOfReferenceUID" in caplog.text and "the RTDOSE is ignored" in caplog.text
    assert read_case(tmp_path / "nifti" / "new_005").dose is None
    with pytest.raises(InputError, match="FrameOfReferenceUID"):  # training data: still an error
        ingest_case(patient, "new_005", phantom_dataset_config(), tmp_path / "train_nifti")


def test_report_with_plan_and_bad_goals(model_dir, tmp_path):
    patient = new_patient(tmp_path / "new_006", 106, keep_dose=True)
    case_dir, h5, pred = tmp_path / "nifti" / "new_006", tmp_path / "new_006.h5", tmp_path / "pred" / "new_006.nii.gz"
    ingest_new_patient(patient, "new_006", {}, model_dir, case_dir)
    preprocess_new_patient(case_dir, model_dir, h5)
    predict_case(model_dir, h5, case_dir, pred, {"n_samples": 2})
    out = tmp_path / "report" / "new_006"
    spec = read_model_spec(model_dir)
    for goals, message in (({"PTV": {"D95": "at least 57 Gy"}}, r"predict.goals.PTV.D95: value 'at least 57 Gy'"),
                           ({"Liver": {"Dmean": "< 30 Gy"}}, r"predict.goals.Liver: ROI 'Liver' is not one of")):
        with pytest.raises(InputError, match=message):
            resolve_goals(spec, {"goals": goals})
        with pytest.raises(InputError, match=message):
            report_new_patient(case_dir, pred, model_dir, {"goals": goals}, out)
        assert not out.exists() and not list(out.parent.glob(".*"))
    report_new_patient(case_dir, pred, model_dir, {"goals": "phantom"}, out)
    goals = pd.read_csv(out / "goals.csv")
    case = read_case(case_dir)
    cord = goals[(goals.roi == "SpinalCord") & (goals.goal == "Dmax < 45 Gy")].iloc[0]
    predicted = read_image(pred)[0]
    assert cord.plan == pytest.approx(case.dose[case.masks["SpinalCord"] > 0].max(), abs=1e-3)
    assert cord.predicted == pytest.approx(predicted[case.masks["SpinalCord"] > 0].max(), abs=1e-3)
    assert cord.plan_pass == ("pass" if cord.plan < 45 else "FAIL")
    assert set(goals.predicted_pass) <= {"pass", "FAIL"} and goals.plan.notna().all()
    dvh = pd.read_csv(out / "dvh.csv")
    assert set(dvh.source) == {"predicted", "plan"} and set(dvh.roi) == set(case.masks)
    assert {p.name for p in out.iterdir()} == {"goals.csv", "dvh.csv", "dvh.png", "slices.png", "summary.md"}
    outputs = [p for d in (case_dir, pred.parent, out) for p in d.rglob("*") if p.is_file()] + [h5]
    assert not [s for s in SENTINELS if any(s.encode() in p.read_bytes() for p in outputs)]


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                           "-d", str(workdir), "--configfile", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_prediction_only_workflow(model_dir, tmp_path):
    """Two fresh phantom patients, RTDOSE deleted, through `snakemake --configfile <predict config>`."""
    patients = tmp_path / "patients"
    for i, case in enumerate(["new_001", "new_002"]):
        new_patient(patients / case, 201 + i)
    config = tmp_path / "predict.yaml"
    settings = {"dataset": {"name": "fresh", "source": "dicom", "input_dir": str(patients)},
                "predict": {"model": str(model_dir), "goals": "phantom", "sample": {"n_samples": 2}}}
    config.write_text(yaml.safe_dump(settings))
    work = tmp_path / "work"

    dry = snakemake(work, config, "-n", "--cores", "2")
    assert dry.returncode == 0, dry.stderr
    table = (dry.stdout + dry.stderr).split("Job stats:")[1].split("total")[0].splitlines()[3:]
    jobs = {line.split()[0]: int(line.split()[1]) for line in table if line.strip()}
    assert jobs == {"ingest_new": 2, "preprocess_new": 2, "predict_new": 2, "report_new": 2, "all": 1}

    run = snakemake(work, config, "--cores", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    res = work / "results" / "fresh"
    for case in ("new_001", "new_002"):
        for name in (f"{case}.nii.gz", f"{case}_std.nii.gz", f"{case}_RTDOSE.dcm", f"{case}.json"):
            assert (res / "predictions" / name).is_file(), name
        assert (res / "report" / case / "goals.csv").is_file() and (res / "report" / case / "slices.png").is_file()
        ct = sorted((patients / case / "CT").iterdir())
        ct_ds = pydicom.dcmread(ct[0])
        rd = pydicom.dcmread(res / "predictions" / f"{case}_RTDOSE.dcm")
        assert rd.FrameOfReferenceUID == ct_ds.FrameOfReferenceUID and rd.StudyInstanceUID == ct_ds.StudyInstanceUID
        reader = sitk.ImageSeriesReader()
        ct_img = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(patients / case / "CT")))
        rd_img = sitk.ReadImage(str(res / "predictions" / f"{case}_RTDOSE.dcm"))
        assert rd_img.GetSize() == ct_img.GetSize()
        assert np.allclose(rd_img.GetOrigin(), ct_img.GetOrigin(), atol=1e-3)
        assert np.allclose(rd_img.GetSpacing(), ct_img.GetSpacing(), atol=1e-3)
        nifti = read_image(res / "predictions" / f"{case}.nii.gz")[0]
        raw = sitk.GetArrayFromImage(rd_img) * float(rd.DoseGridScaling)
        assert np.abs(raw - nifti).max() <= float(rd.DoseGridScaling)
    blob = b"".join(p.read_bytes() for p in work.rglob("*") if p.is_file())
    assert not [s for s in SENTINELS if s.encode() in blob]

    # Bad settings stop the dry run before any job, with the setting named.
    bad = dict(settings, predict={**settings["predict"], "goals": {"PTV": {"D95": ">= 57"}}})
    config.write_text(yaml.safe_dump(bad))
    dry = snakemake(tmp_path / "work2", config, "-n")
    assert dry.returncode != 0 and "predict.goals.PTV.D95: value '>= 57'" in dry.stdout + dry.stderr
    config.write_text(yaml.safe_dump(dict(settings, predict={"model": str(tmp_path)})))
    dry = snakemake(tmp_path / "work2", config, "-n")
    assert dry.returncode != 0 and "has no config.json" in dry.stdout + dry.stderr

"""OpenKBP the way a user runs it: the README's command (`snakemake --cores N --configfile
config/openkbp-local.yaml`, a copy of config/openkbp.yaml with a tiny experiment) on an
OpenKBP provided-data folder with train/validation/test patients, through to the
submission CSVs and the report. Checked: each job's settings come from that config alone;
the test split is evaluated; the CSVs read back equal the NIfTI predictions on the 128^3
grid (0 outside the possible-dose mask); and the CSVs scored by an independent
implementation of the official rules (written here from FACTS.md, not dosediff's) agree
with dosediff's openkbp_scores.json to 1e-6."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from snakemake_run import REPO, assert_settings_from, job_settings, openkbp_layout, snakemake, write_config

TINY = {"model": "unet", "condition": "psdm", "multiscale": True, "fusion_former": False,
        "network": {"width": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [],
                    "num_heads": 2, "norm_groups": 8},
        "train": {"steps": 3, "batch_size": 2, "checkpoint_every": 3, "validate_every": 0, "log_every": 1,
                  "dose_max_gy": 80.0},
        "sample": {"batch_size": 32}}
PLACING = {"train-pats": {"pt_1": "train-pats/pt_1", "pt_2": "train-pats/pt_2"},
           "validation-pats": {"pt_201": "validation-pats/pt_201"},
           # the shared sample has no test patients: a validation patient stands in as pt_241
           "test-pats": {"pt_241": "validation-pats/pt_202"}}
OARS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
TARGETS = ("PTV56", "PTV63", "PTV70")


# --- an independent reading and scoring of OpenKBP files (FACTS.md "OpenKBP") ---------------

def read_csv_volume(path: Path) -> np.ndarray:
    """Sparse `,data` CSV (plain or .xz) -> dense 128^3 float64 in OpenKBP axis order."""
    text = lzma.open(path, "rt").read() if path.suffix == ".xz" else path.read_text()
    lines = text.splitlines()
    assert lines[0].strip() == ",data"
    out = np.zeros(128 ** 3)
    for line in lines[1:]:
        index, _, value = line.partition(",")
        out[int(index)] = float(value) if value.strip() else 1.0
    return out.reshape(128, 128, 128)


def official_scores(patients: dict[str, Path], predictions: dict[str, np.ndarray]) -> tuple[float, float]:
    """Dose score (mean over patients of sum |ref - pred| / possible-dose voxels) and DVH score
    (mean |ref - pred| over every patient/ROI/metric cell)."""
    dose_errors, cells = [], []
    for case, folder in patients.items():
        ref = read_csv_volume(folder / "dose.csv.xz")
        pred = predictions[case]
        possible = read_csv_volume(folder / "possible_dose_mask.csv.xz") > 0
        dose_errors.append(np.abs(ref - pred).sum() / possible.sum())
        dims = [float(v) for v in lzma.open(folder / "voxel_dimensions.csv.xz", "rt").read().split()]
        n_tenth = max(1, round(100 / np.prod(dims)))
        for roi in OARS + TARGETS:
            path = folder / f"{roi}.csv.xz"
            if not path.is_file():
                continue
            mask = read_csv_volume(path) > 0
            r, p = ref[mask], pred[mask]
            if roi in OARS:
                q = 100 - n_tenth / mask.sum() * 100
                pairs = [(np.percentile(r, q), np.percentile(p, q)), (r.mean(), p.mean())]
            else:
                pairs = [(np.percentile(r, k), np.percentile(p, k)) for k in (1, 5, 99)]
            cells += [abs(a - b) for a, b in pairs]
    return float(np.mean(dose_errors)), float(np.mean(cells))


# -------------------------------------------------------------------------------------------

@pytest.mark.slow  # see the module docstring; timing in the issue note
def test_readme_openkbp_command_to_submission_and_scores(tmp_path, openkbp_dir):
    data = openkbp_layout(tmp_path / "provided-data", openkbp_dir, PLACING)
    config = yaml.safe_load((REPO / "config" / "openkbp.yaml").read_text())
    config["dataset"]["input_dir"] = str(data)
    config["experiments"] = {"tiny": TINY}
    config["report"] = {"tables": {"baseline": ["mean_dose", "tiny"]}, "per_roi": ["tiny"],
                        "labels": {"tiny": "tiny UNet", "mean_dose": "Mean training dose"}}
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    write_config(work / "config" / "openkbp-local.yaml", config)

    out = snakemake(work, None, "--cores", "2", "--configfile", "config/openkbp-local.yaml")
    assert out.returncode == 0, out.stderr[-4000:]
    jobs = job_settings(out.stdout + out.stderr)
    assert {"prepare", "split", "train", "evaluate", "report"} <= {s for s, _ in jobs}
    assert_settings_from(config, jobs)

    results = work / "results" / "openkbp"
    splits = json.loads((results / "splits.json").read_text())
    assert splits["test"] == ["pt_241"] and splits["evaluate_on"] == "test"
    assert any((results / "report").iterdir())
    for experiment in ("tiny", "mean_dose"):
        folder = results / "submission" / experiment
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["pt_241.csv"]
        # values are written as the shortest text of each float32: read back through float32
        submitted = read_csv_volume(folder / "pt_241.csv").astype(np.float32)
        nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(results / "predictions" / experiment / "pt_241.nii.gz")))
        # Case arrays are (z, y, x) = OpenKBP axes (2, 0, 1)
        assert np.array_equal(submitted, nifti.transpose(1, 2, 0))
        possible = read_csv_volume(data / "test-pats" / "pt_241" / "possible_dose_mask.csv.xz") > 0
        assert submitted[~possible].max() == 0 and submitted[possible].max() > 0
        dose_score, dvh_score = official_scores({"pt_241": data / "test-pats" / "pt_241"}, {"pt_241": submitted.astype(np.float64)})
        written = json.loads((results / "metrics" / experiment / "openkbp_scores.json").read_text())
        assert written["dose_score"] == pytest.approx(dose_score, abs=1e-6)
        assert written["dvh_score"] == pytest.approx(dvh_score, abs=1e-6)

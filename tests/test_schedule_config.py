"""The noise schedule is part of the experiment: saved in config.json, built in one place,
and model folders saved before the schedule section load with the schedule they were trained with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from dosediff.checkpoint import model_info, read_config, save_final
from dosediff.diffusion.schedule import LEGACY_SCHEDULE, ScheduleConfig, linear_schedule
from dosediff.errors import InputError
from dosediff.experiment import ExperimentConfig
from dosediff.models.factory import build_model
from dosediff.predict import load_for_prediction, make_predictor
from dosediff.training.objective import make_schedule

REPO = Path(__file__).resolve().parents[1]
ROIS = ["PTV", "Body"]
TINY = {"width": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 4, "num_heads": 2,
        "fusion_dim": 16, "fusion_mlp_dim": 16, "fusion_patch_size": [2, 2]}


def _folder(tmp_path: Path, **exp_keys) -> Path:
    exp = ExperimentConfig.from_mapping({"network": TINY, **exp_keys}, "tiny", ROIS)
    net = build_model(exp.network)
    save_final(tmp_path, net, net, exp, model_info(exp, ROIS, [], 1, [16, 16]))
    return tmp_path


def test_schedule_saved_and_built_once(tmp_path):
    folder = _folder(tmp_path, schedule={"num_timesteps": 500, "beta_end": 0.03})
    saved = json.loads((folder / "config.json").read_text())
    assert saved["experiment"]["schedule"] == {"kind": "linear", "num_timesteps": 500, "beta_start": 1e-4,
                                               "beta_end": 0.03}
    exp, _ = read_config(folder)
    expected = linear_schedule(500, 1e-4, 0.03)
    torch.testing.assert_close(make_schedule(exp, torch.device("cpu")), expected, rtol=0, atol=0)
    loaded = load_for_prediction(folder, "cpu")
    torch.testing.assert_close(make_predictor(loaded, exp.sample).abar, expected, rtol=0, atol=0)


def test_old_config_without_schedule_section_loads_the_legacy_schedule(tmp_path):
    folder = _folder(tmp_path)
    saved = json.loads((folder / "config.json").read_text())
    del saved["experiment"]["schedule"], saved["schedule"]
    saved["experiment"]["prediction"] = saved["experiment"].pop("parametrization")  # the key before the rename
    (folder / "config.json").write_text(json.dumps(saved))
    exp, _ = read_config(folder)
    assert exp.schedule == LEGACY_SCHEDULE and exp.parametrization == "epsilon"
    loaded = load_for_prediction(folder, "cpu")
    torch.testing.assert_close(make_predictor(loaded, exp.sample).abar, linear_schedule(), rtol=0, atol=0)


def test_bad_schedule_and_both_keys_are_refused():
    with pytest.raises(InputError, match="schedule"):
        ExperimentConfig.from_mapping({"schedule": {"beta_start": 0.5, "beta_end": 0.1}}, "x", ROIS)
    with pytest.raises(InputError, match="not both"):
        ExperimentConfig.from_mapping({"prediction": "v", "parametrization": "v"}, "x", ROIS)
    with pytest.raises(InputError, match="sample.steps"):
        ExperimentConfig.from_mapping({"schedule": {"num_timesteps": 10}, "sample": {"steps": 20}}, "x", ROIS)
    assert ScheduleConfig() == LEGACY_SCHEDULE  # today's defaults are what old models used


def test_schema_accepts_the_schedule_section():
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    name = next(iter(config["experiments"]))
    config["experiments"][name]["schedule"] = {"kind": "linear", "num_timesteps": 1000, "beta_start": 1e-4,
                                               "beta_end": 0.02}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    config["experiments"][name]["schedule"]["betas"] = [0.1]
    with pytest.raises(Exception, match="betas"):
        validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))


def test_schema_enums_are_the_package_lists():
    from dosediff.diffusion.parametrization import PREDICTIONS
    from dosediff.experiment import CONDITIONS
    from dosediff.models.config import ARCHS

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = schema["properties"]["experiments"]["additionalProperties"]["properties"]
    assert keys["model"]["enum"] == list(ARCHS) and keys["condition"]["enum"] == list(CONDITIONS)
    assert keys["prediction"]["enum"] == keys["parametrization"]["enum"] == list(PREDICTIONS)

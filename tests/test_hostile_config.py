"""Issue 9, defect 8 (config half): settings that meet across sections fail at the dry run
(workflow start) or `dosediff check-config`, not at train time; nothing is ignored silently."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dosediff.cli import main
from dosediff.config_check import check_config
from dosediff.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _config(**edits) -> dict:
    """The embedded default with `section.key` edits (None deletes the key)."""
    config = copy.deepcopy(DEFAULT)
    for dotted, value in edits.items():
        *parents, key = dotted.split(".")
        node = config
        for name in parents:
            node = node.setdefault(name, {})
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
    return config


def _dry_run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(path), "--cores", "1", "-n"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "config").glob("*.yaml")))
def test_shipped_configs_pass_the_check(name):
    check_config(yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text()))


def test_condition_not_stored_and_size_not_fitting_fail_at_the_dry_run(tmp_path):
    """`condition: msdm` without msdm in preprocess.representations, and a size that the
    network's 3 down-samplings (x 2x2 fusion patches) cannot halve, used to pass the dry run."""
    out = _dry_run(tmp_path, _config(**{"experiments.dosediff.condition": "msdm"}))
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "experiments.dosediff.condition" in text and "preprocess.representations ['psdm']" in text, text
    assert not (tmp_path / "results").exists()  # failed before any job
    with pytest.raises(InputError, match=r"preprocess.size \[60, 64\] for experiments.dosediff.*divisible by 8"):
        check_config(_config(**{"preprocess.size": [60, 64]}))
    with pytest.raises(InputError, match=r"\[56, 64\].*fusion_patch_size"):  # 56 / 8 = 7, not a multiple of 2
        check_config(_config(**{"preprocess.size": [56, 64]}))
    check_config(_config(**{"experiments.dosediff.condition": "msdm", "preprocess.representations": ["psdm", "msdm"]}))
    check_config(_config(**{"experiments.dosediff.condition": "mask"}))  # masks are always stored


def test_experiment_name_with_a_space_fails_early(tmp_path):
    config = _config()
    config["experiments"]["my run"] = config["experiments"].pop("unet")
    out = _dry_run(tmp_path, config)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "my run" in text, text
    with pytest.raises(InputError, match="setting experiments \\(experiment name\\): name 'my run'.*Fix:"):
        check_config(config)


def test_entries_that_would_be_ignored_are_errors():
    with pytest.raises(InputError, match=r"evaluate.metrics: ROI names \['Hreat'\] are not in dataset.rois"):
        check_config(_config(**{"evaluate.metrics": {"PTV": ["D95"], "Hreat": ["Dmean"]}}))
    with pytest.raises(InputError, match=r"dataset.aliases: aliases of \['Bladder'\], not in dataset.rois"):
        check_config(_config(**{"dataset.aliases": {"Bladder": ["BLADDER"]}}))
    with pytest.raises(InputError, match="evaluate: unknown keys \\['metircs'\\]"):
        check_config(_config(**{"evaluate.metircs": {"PTV": ["D95"]}}))
    with pytest.raises(InputError, match="split.fractions"):  # this check was unreachable before
        check_config(_config(**{"split.fractions": [0.5, 0.1, 0.1]}))
    with pytest.raises(InputError, match="phantom.shape"):  # was found only by the phantom job
        check_config(_config(**{"phantom.shape": [4, 96, 96]}))


def test_excluded_folder_name_is_an_error_without_the_name():
    """exclude_cases take case ids. A pseudonymised folder's name there would exclude nothing
    (and echoing it would print a patient ID); an id that names no case only warns (common.smk,
    test_hostile_names), since a config may be shared by exports that lack some cases."""
    config = _config(**{"dataset.source": "dicom", "dataset.pseudonyms": {"MRN4711": "anon_1"},
                        "dataset.exclude_cases": ["MRN4711"]})
    with pytest.raises(InputError, match="dataset.exclude_cases: 1 entries are patient folder names") as err:
        check_config(config)
    assert "MRN4711" not in str(err.value)


def test_check_config_command(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(**{"experiments.unet.condition": "tsbdm"})))
    assert main(["check-config", "--settings", str(path)]) == 2
    err = capsys.readouterr().err
    assert "experiments.unet.condition" in err and "tsbdm" in err and "Traceback" not in err
    path.write_text(yaml.safe_dump(DEFAULT))
    assert main(["check-config", "--settings", str(path)]) == 0


def test_prediction_only_config_checks_its_names():
    config = yaml.safe_load((REPO / "config" / "predict.yaml").read_text())
    config["dataset"]["name"] = "../elsewhere"
    with pytest.raises(InputError, match="dataset.name"):
        check_config(config)
    config["dataset"].update(name="site", pseudonyms={"MRN1": "a b"})
    with pytest.raises(InputError, match="dataset.pseudonyms: name 'a b'"):
        check_config(config)

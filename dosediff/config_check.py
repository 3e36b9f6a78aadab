"""Checks of the whole config where sections meet, run before any job starts.

Each section's own values are checked by its typed settings (config.py, experiment.py,
metrics/evaluate.py); what no single section can see is checked here: an experiment's
condition among the stored representations, preprocess.size through each network, the ROIs
of evaluate.metrics among dataset.rois, exclude_cases written as folder names, and the
phantom's geometry (which PhantomConfig leaves to the phantom's own check). The
workflow (common.smk, at the dry run) and `dosediff check-config` both call `check_config`,
so a bad config fails before training, not at train time.
"""

from __future__ import annotations

from collections.abc import Mapping

from dosediff.config import REPRESENTATIONS, DatasetConfig, PhantomConfig, PreprocessConfig, SplitConfig, section
from dosediff.errors import InputError, input_error
from dosediff.names import check_name, check_pseudonyms


def check_condition_stored(name: str, condition: str, preprocess: PreprocessConfig) -> None:
    """An experiment's distance-map condition must be one that preprocessing stores."""
    if condition in REPRESENTATIONS and condition not in preprocess.representations:
        raise input_error(f"setting experiments.{name}.condition",
                          f"value {condition!r}, not among preprocess.representations {preprocess.representations}",
                          "a condition that preprocessing stores (mask and none always work)",
                          f"add {condition} to preprocess.representations, or change the experiment's condition")


def check_size_fits(name: str, network, preprocess: PreprocessConfig) -> None:
    """preprocess.size must pass the experiment's network (down-samplings, fusion patches)."""
    try:
        network.check_input_size(*preprocess.size)
    except InputError as err:
        raise InputError(f"setting preprocess.size {preprocess.size} for experiments.{name}: {err}") from None


def check_metric_rois(metrics: Mapping[str, object], dataset: DatasetConfig) -> None:
    """Every ROI of evaluate.metrics must be one of dataset.rois (a typo would evaluate nothing)."""
    unknown = [roi for roi in metrics if roi not in dataset.rois]
    if unknown and dataset.rois:
        raise input_error("setting evaluate.metrics", f"ROI names {unknown} are not in dataset.rois",
                          f"names from {dataset.rois}", "correct the spelling or add the ROI to dataset.rois")


def check_exclusions(dataset: Mapping) -> None:
    """exclude_cases take case ids; a folder name that has a pseudonym would exclude nothing.
    Only the count is named: folder names may be patient IDs."""
    pseudonyms = dataset.get("pseudonyms") or {}
    by_folder = [c for c in dataset.get("exclude_cases") or [] if c in pseudonyms]
    if by_folder:
        raise input_error("setting dataset.exclude_cases",
                          f"{len(by_folder)} entries are patient folder names that dataset.pseudonyms maps",
                          "case ids (the pseudonym where a folder has one)",
                          "write the pseudonym of each excluded folder instead of the folder name")


def check_experiments(config: Mapping, dataset: DatasetConfig, preprocess: PreprocessConfig) -> None:
    from dosediff.experiment import ExperimentConfig  # imports torch: only when there are experiments

    experiments = config.get("experiments") or {}
    if not isinstance(experiments, Mapping):
        raise input_error("setting experiments", f"value {experiments!r}", "a mapping name -> settings",
                          "write experiments as a YAML mapping")
    for name, data in experiments.items():
        exp = ExperimentConfig.from_mapping(data, name, dataset.rois)
        check_condition_stored(name, exp.condition, preprocess)
        check_size_fits(name, exp.network, preprocess)


def check_config(config: Mapping) -> None:
    """Build every section's typed settings and check where they meet; an InputError names
    the first bad setting. A prediction-only run (a `predict` section) takes its
    ROIs and preprocessing from the model (new_patients.py checks the dataset against it), so
    only its exclusions are checked here."""
    from dosediff.metrics.evaluate import EvaluationConfig

    raw = config.get("dataset") or {}
    check_exclusions(raw)
    if config.get("predict"):  # ROIs (which the aliases name) and preprocessing come from the model
        check_name(raw.get("name"), "dataset.name")  # it names the results folder
        check_pseudonyms(raw.get("pseudonyms") or {})
        return
    dataset = section(config, DatasetConfig, "dataset")
    phantom = section(config, PhantomConfig, "phantom")
    if dataset.source == "phantom":
        from dosediff.phantom.patient import check_config as check_phantom

        check_phantom(phantom)  # shape and spacing that a thorax fits, at the dry run
    section(config, SplitConfig, "split")
    preprocess = section(config, PreprocessConfig, "preprocess")
    evaluation = section(config, EvaluationConfig, "evaluate")
    check_metric_rois(evaluation.metrics, dataset)
    check_experiments(config, dataset, preprocess)

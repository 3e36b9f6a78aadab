"""Evaluate stage: predicted doses of one experiment vs the planned doses -> metric tables
and per-case figures. No torch: it reads the NIfTI files the other stages wrote."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from dosediff.atomic import atomic_file
from dosediff.config import DatasetConfig, PreprocessConfig, section
from dosediff.errors import input_error
from dosediff.io.nifti import read_case, read_image
from dosediff.metrics.evaluate import CaseMetrics, EvaluationConfig, evaluate_case, openkbp_scores_from_rows
from dosediff.names import case_predictions, output_paths
from dosediff.preprocess.body import body_mask
from dosediff.volume import Case

log = logging.getLogger("dosediff")

COLUMNS = ["experiment", "case", "roi", "metric", "unit", "reference", "predicted", "value", "note"]


def long_rows(experiment: str, case: str, result: CaseMetrics) -> list[dict]:
    """One evaluate_case result -> rows of the long per-case table."""
    return [{"experiment": experiment, "case": case, **r} for r in result.rows]


def _sections(settings: dict) -> tuple[DatasetConfig, PreprocessConfig, EvaluationConfig]:
    return (section(settings, DatasetConfig, "dataset"), section(settings, PreprocessConfig, "preprocess"),
            section(settings, EvaluationConfig, "evaluate"))


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Atomic CSV write."""
    with atomic_file(path) as tmp:
        df.to_csv(tmp, index=False)


def _case_figures(case_id: str, ref, pred: np.ndarray, pred_path: Path, body: np.ndarray, fig_dir: Path,
                  title: str, dataset: DatasetConfig, cfg: EvaluationConfig) -> None:
    """figures/<case>_dvh.png and <case>_dose.png of one case (the std map where one was saved)."""
    from dosediff.report.figures import dvh_figure
    from dosediff.report.slices import dose_slices_figure

    std_path = output_paths(pred_path)["std"]
    std = read_image(std_path)[0] if std_path.is_file() else None
    fig_dir.mkdir(parents=True, exist_ok=True)
    dvh_figure(ref.dose, pred, ref.masks, ref.geometry.spacing, fig_dir / f"{case_id}_dvh.png",
               title=title, bin_width_gy=cfg.dvh_bin_gy, case=case_id)
    target = next((ref.masks[t] for t in dataset.targets if t in ref.masks), None)
    dose_slices_figure(ref.ct, ref.dose, pred, body, fig_dir / f"{case_id}_dose.png", std=std,
                       dose_max=max(float(ref.dose.max()), 1e-3), spacing_mm=ref.geometry.spacing,
                       target=target, title=title, case=case_id,
                       prescription_gy=ref.prescription_gy or dataset.prescription_gy,
                       isodose_percent=cfg.isodose_percent)


def read_prediction(prediction: Path, ref: Case, case_dir: Path) -> np.ndarray:
    """A prediction (float32 Gy) checked against its case: on the CT grid, a planned dose to compare."""
    pred, pred_geo = read_image(Path(prediction))
    if not pred_geo.same_grid(ref.geometry):
        raise input_error(prediction, f"grid {pred_geo.shape} at {pred_geo.spacing} mm",
                          f"the case's CT grid {ref.geometry.shape} at {ref.geometry.spacing} mm",
                          "predict again with `dosediff predict` (it writes on the CT grid)", case=ref.case_id)
    if ref.dose is None:
        raise input_error(case_dir, "no planned dose", "a reference dose to evaluate against",
                          "evaluate only cases ingested with their RTDOSE", case=ref.case_id)
    return pred.astype(np.float32)


def evaluate_experiment(settings: dict, experiment: str, references: list[Path], predictions: list[Path],
                        out_dir: Path, figures: bool = True, label: str | None = None) -> pd.DataFrame:
    """Metrics of every case (its ingest folder in `references`, its dose at the same place in
    `predictions`) -> out_dir/per_case.csv (per_case.html to read), summary.csv/.md,
    openkbp_scores.json (where a possible-dose mask exists) and figures/<case>_dvh.png,
    <case>_dose.png; figure titles name the model by `label` (the report's label of it)."""
    from dosediff.report.markup import write_html, write_table
    from dosediff.report.tables import per_case_table, summary, summary_table

    dataset, prep, cfg = _sections(settings)
    out_dir, name, n = Path(out_dir), label or experiment, len(references)
    rows = []
    for case_id, case_dir, pred_path in case_predictions(references, predictions, "evaluate"):
        ref = read_case(case_dir)
        pred = read_prediction(pred_path, ref, case_dir)
        body = body_mask(ref.ct, prep.body_threshold_hu)
        result = evaluate_case(ref.dose, pred, ref.masks, ref.geometry.spacing, body,
                               ref.prescription_gy or dataset.prescription_gy, cfg, ref.possible_dose,
                               targets=dataset.targets, case=case_id)
        rows += long_rows(experiment, case_id, result)
        log.info(f"case {case_id}: MAE {result.value('Body', 'MAE'):.3f} Gy, "
                 f"dose score {result.value('All', 'dose_score'):.3f} Gy")
        if figures:
            _case_figures(case_id, ref, pred, pred_path, body, out_dir / "figures", f"{case_id} · {name}", dataset,
                          cfg)
    per_case = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(per_case, out_dir / "per_case.csv")
    write_html(per_case_table(per_case), out_dir / "per_case.html",
               f"{name}: metrics of each of the n = {n} cases. ΔD (Gy) and ΔV (%) are "
               "predicted − reference: below 0 the model under-doses or under-covers. per_case.csv beside this "
               "file holds every value unrounded, with the reference and predicted values.")
    write_table(summary_table(summary(per_case, 2), {experiment: name}), out_dir / "summary",
                caption=f"{name}: mean ± sample std over n = {n} cases; |ΔD| and |ΔV| are "
                        "|predicted − reference|.")
    if any(r["metric"] == "openkbp_dose_score" for r in rows):
        scores = openkbp_scores_from_rows(rows)
        (out_dir / "openkbp_scores.json").write_text(json.dumps(scores, indent=2))
        log.info(f"OpenKBP dose score {scores['dose_score']:.3f} Gy, DVH score {scores['dvh_score']:.3f} Gy")
    return per_case


STUDY_METRICS = ("MAE", "SSIM", "PSNR", "dose_score", "volume_score")


def evaluate_study(settings: dict, experiment: str, references: list[Path], predictions: list[Path],
                   out_path: Path) -> pd.DataFrame:
    """Sampling study (paper Fig. 4 and Table 4): metrics of every prediction -> one long CSV
    with columns experiment, steps, seed, case, metric, value, seconds; the case, steps and
    seed as each prediction's manifest records them, the case's folder among `references`.
    Gamma is left out here: the study compares sampling settings, not plans."""
    from dataclasses import replace

    dataset, prep, cfg = _sections(settings)
    cfg = replace(cfg, gamma=replace(cfg.gamma, enabled=False))
    refs = {Path(r).name: (Path(r), read_case(Path(r))) for r in references}
    bodies = {c: body_mask(r.ct, prep.body_threshold_hu) for c, (_, r) in refs.items()}
    rows = []
    for pred_path in predictions:
        manifest = json.loads(output_paths(pred_path)["manifest"].read_text())
        case_id = manifest["case_id"]
        if case_id not in refs:
            raise input_error(pred_path, f"case {case_id!r}", f"one of the --references cases {sorted(refs)}",
                              "pass the ingest folder of every predicted case", case=case_id)
        case_dir, ref = refs[case_id]
        pred = read_prediction(pred_path, ref, case_dir)
        result = evaluate_case(ref.dose, pred, ref.masks, ref.geometry.spacing, bodies[case_id],
                               ref.prescription_gy or dataset.prescription_gy, cfg, targets=dataset.targets,
                               case=case_id)
        rows += [{"experiment": experiment, "steps": manifest["sample"]["steps"], "seed": manifest["seed"],
                  "case": case_id, "metric": r["metric"], "value": r["value"],
                  "seconds": float(manifest.get("seconds", math.nan))} for r in result.rows
                 if r["metric"] in STUDY_METRICS]
    df = pd.DataFrame(rows, columns=["experiment", "steps", "seed", "case", "metric", "value", "seconds"])
    write_csv(df, Path(out_path))
    return df

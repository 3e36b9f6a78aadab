"""Report stage: the paper's tables and dataset-level figures from the metric tables."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dosediff.config import ReportConfig
from dosediff.metrics.evaluate import EvaluationConfig, gamma_criterion
from dosediff.report.case_dvh import case_dvh_figures
from dosediff.report.figures import seed_figure, steps_figure
from dosediff.report.markup import write_table
from dosediff.report.tables import (comparison_table, format_mean_std, metric_label, per_roi_table, read_per_case,
                                    seed_spread, seed_spread_table, summary, summary_table)

log = logging.getLogger("dosediff")
# what every caption says about signed errors
SIGNED = "A signed ΔX is predicted − reference: below 0 the model under-doses (D) or under-covers (V)."
DECIMALS = 2  # a handful of test cases: 0.01 Gy, 0.01 % are already finer than their spread


def _n_cases(per_case: pd.DataFrame, experiments: list[str]) -> str:
    counts = sorted({int(per_case.loc[per_case["experiment"] == e, "case"].nunique()) for e in experiments})
    return f"n = {counts[0]}" if len(counts) == 1 else f"n = {'–'.join(str(c) for c in counts)}"


def build_report(cfg: ReportConfig, per_case_paths: Sequence[Path], out_dir: Path,
                 evaluation: EvaluationConfig | None = None, steps_csv: Path | None = None,
                 seeds_csv: Path | None = None, references: Sequence[Path] = (),
                 predictions: Sequence[Path] = ()) -> None:
    """Write the tables (CSV + Markdown + HTML, each with its caption), the dataset-level
    figures and, given the case folders `references` and each DVH model's predictions of them
    (`ReportConfig.dvh_models`, model after model), one DVH figure per case with every model
    overlaid (dvh/<case>.png) into out_dir. `evaluation` (the evaluate section; default its
    defaults) gives the gamma criteria the captions state and the DVH bin width."""
    evaluation = evaluation or EvaluationConfig()
    gamma = evaluation.gamma
    gamma_text = gamma_criterion(gamma) if gamma.enabled else "not computed (evaluate.gamma.enabled false)"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_case = read_per_case(per_case_paths)
    stats = summary(per_case, DECIMALS)
    everyone = list(dict.fromkeys(per_case["experiment"]))
    common = (f"Mean ± sample std over {_n_cases(per_case, everyone)} test cases per model; "
              f"(n=k/N) marks a cell that k of N cases had. ")
    write_table(summary_table(stats, cfg.labels), out_dir / "summary",
                caption=f"Summary of every metric per model. {common}|ΔD| and |ΔV| are |predicted − reference|; "
                        f"{SIGNED}")
    for name, experiments in cfg.tables.items():
        write_table(comparison_table(per_case, experiments, labels=cfg.labels, decimals=DECIMALS), out_dir / name,
                    caption=f"Models compared ({name}). {common}Gamma pass rate: {gamma_text}. "
                            "Dose and volume scores: mean |ΔD| (Gy) and |ΔV| (%) over the configured DVH "
                            f"metrics; mean ΔD and ΔV: the same means of the signed errors. {SIGNED} "
                            "Best per column in bold (none for signed errors).")
    if cfg.per_roi:
        write_table(per_roi_table(per_case, cfg.per_roi, labels=cfg.labels, decimals=DECIMALS),
                    out_dir / "per_roi", along="rows",
                    caption=f"Per-ROI DVH errors: ΔX and |ΔX| of each metric X. {common}{SIGNED} "
                            "Best per row in bold (none for signed errors).")
    if steps_csv is not None:
        steps = pd.read_csv(steps_csv)
        steps_figure(steps, out_dir / "steps.png", title="DDIM steps: quality and time")
        write_table(steps_table(steps), out_dir / "steps",
                    caption="DDIM steps versus quality and time: mean ± sample std over the test cases.")
    if seeds_csv is not None:
        seeds = pd.read_csv(seeds_csv)
        seed_figure(seeds, out_dir / "seeds.png", title="Spread over sampling seeds")
        write_table(seed_spread_table(seed_spread(seeds), labels=cfg.labels), out_dir / "seeds",
                    caption="Spread over sampling seeds: mean ± sample std (and range) over seeds of "
                            "each seed's mean over the test cases.")
    if references:
        models = [cfg.labels.get(e, e) for e in cfg.dvh_models(everyone)]
        case_dvh_figures(references, predictions, models, out_dir / "dvh", bin_width_gy=evaluation.dvh_bin_gy)
    log.info(f"report written to {out_dir}")


def steps_table(steps: pd.DataFrame) -> pd.DataFrame:
    """Rows (model, DDIM steps), columns each metric with its unit as 'mean ± std' over cases,
    and the mean time per case in seconds."""
    steps = steps.copy()
    steps["value"] = pd.to_numeric(steps["value"], errors="coerce")
    g = steps.groupby(["experiment", "steps", "metric"], sort=False)["value"]
    stats = pd.concat({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}, axis=1)
    cells = stats.apply(lambda r: format_mean_std(r["mean"], r["std"], int(r["n"]), int(r["n"]), DECIMALS), axis=1)
    table = cells.unstack("metric")
    table.columns = [metric_label(m, None, "All") for m in table.columns]
    times = steps.groupby(["experiment", "steps", "case"])["seconds"].first().groupby(level=[0, 1]).mean()
    table["Time per case (s)"] = times.map(lambda t: f"{t:.1f}")
    table.index.names = ["Model", "DDIM steps"]
    table.attrs["best_along"] = "none"
    return table

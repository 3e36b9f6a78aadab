"""Report stage: the paper's tables and dataset-level figures from the metric tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dosediff.errors import input_error
from dosediff.report.figures import seed_figure, steps_figure
from dosediff.report.tables import (comparison_table, per_roi_table, read_per_case, seed_spread,
                                    seed_spread_table, summary, write_table)

log = logging.getLogger("dosediff")


@dataclass(frozen=True)
class StudyConfig:
    """A sampling study on one experiment's test cases: DDIM steps (paper Fig. 4) or seeds
    (paper Table 4). An empty experiment switches the study off."""

    experiment: str = ""
    steps: list[int] = field(default_factory=lambda: [8])
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if not self.steps or min(self.steps) < 1 or not self.seeds:
            raise input_error("setting report study", f"steps {self.steps}, seeds {self.seeds}",
                              "non-empty lists, steps at least 1", "e.g. steps [1, 2, 4, 8], seeds [0]")

    def variants(self) -> list[str]:
        """Prediction-set names, e.g. steps8_seed0."""
        return [f"steps{s}_seed{k}" for s in self.steps for k in self.seeds]


@dataclass(frozen=True)
class ReportConfig:
    """Config section `report`: which experiments form which table, labels, studies."""

    tables: dict[str, list[str]] = field(default_factory=dict)  # name -> experiments (Table 1/2 layout)
    per_roi: list[str] = field(default_factory=list)  # experiments of the per-ROI table (Table 3)
    labels: dict[str, str] = field(default_factory=dict)
    steps_study: StudyConfig = field(default_factory=StudyConfig)
    seed_study: StudyConfig = field(default_factory=StudyConfig)


def build_report(cfg: ReportConfig, per_case_paths: list[Path], out_dir: Path,
                 steps_csv: Path | None = None, seeds_csv: Path | None = None) -> None:
    """Write the tables (CSV + Markdown) and the dataset-level figures into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_case = read_per_case(per_case_paths)
    write_table(summary(per_case), out_dir / "summary")
    for name, experiments in cfg.tables.items():
        write_table(comparison_table(per_case, experiments, labels=cfg.labels), out_dir / name)
    if cfg.per_roi:
        write_table(per_roi_table(per_case, cfg.per_roi, labels=cfg.labels), out_dir / "per_roi", along="rows")
    if steps_csv is not None:
        steps = pd.read_csv(steps_csv)
        steps_figure(steps, out_dir / "steps.png", title="DDIM steps: quality and time")
        table = steps.groupby(["experiment", "steps", "metric"])["value"].agg(["mean", "std"]).unstack("metric")
        table.columns = [f"{metric} {stat}" for stat, metric in table.columns]
        table["seconds per case"] = steps.groupby(["experiment", "steps"])["seconds"].mean()
        write_table(table.round(4), out_dir / "steps")
    if seeds_csv is not None:
        seeds = pd.read_csv(seeds_csv)
        seed_figure(seeds, out_dir / "seeds.png", title="Spread over sampling seeds")
        write_table(seed_spread_table(seed_spread(seeds), labels=cfg.labels), out_dir / "seeds")
    log.info(f"report written to {out_dir}")

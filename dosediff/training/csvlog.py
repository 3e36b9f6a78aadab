"""The training CSV log: one row per log step (step, loss, lr, val_mae_gy, seconds)."""

from __future__ import annotations

import csv
from pathlib import Path

LOG_NAME = "train_log.csv"
LOG_COLUMNS = ["step", "loss", "lr", "val_mae_gy", "seconds"]


def open_log(path: Path, resumed_step: int) -> None:
    """Start the CSV log, or drop rows a killed run wrote after its last checkpoint."""
    rows = []
    if path.is_file() and resumed_step > 0:
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resumed_step]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def append_log(path: Path, row: dict) -> None:
    with open(path, "a", newline="") as fh:
        csv.DictWriter(fh, LOG_COLUMNS).writerow(row)

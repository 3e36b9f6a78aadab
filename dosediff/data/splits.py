"""Train/validation/test split by patient: OpenKBP's official split, else a seeded 7:1:2 split."""

from __future__ import annotations

import json
from collections import Counter
import re
from pathlib import Path

import numpy as np

from dosediff.atomic import atomic_file
from dosediff.config import SplitConfig
from dosediff.errors import input_error

SPLITS = ("train", "validation", "test")
OPENKBP_RANGES = {"train": (1, 200), "validation": (201, 240), "test": (241, 340)}  # patient numbers, inclusive


def _natural_key(case_id: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", case_id)]


def openkbp_split(case_ids: list[str]) -> dict[str, list[str]]:
    """OpenKBP's official split by patient number: pt_1..200 train, 201..240 validation, 241..340 test."""
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for case_id in case_ids:
        match = re.fullmatch(r"pt_(\d+)", case_id)
        number = int(match.group(1)) if match else -1
        split = next((name for name, (lo, hi) in OPENKBP_RANGES.items() if lo <= number <= hi), None)
        if split is None:
            raise input_error(f"case {case_id}", "not an OpenKBP patient name", "pt_1 .. pt_340",
                              "keep the open-kbp folder names, or set dataset.source to dicom for other data")
        out[split].append(case_id)
    return {name: sorted(ids, key=_natural_key) for name, ids in out.items()}


def _counts(n: int, fractions: list[float]) -> list[int]:
    """Cases per split: rounded fractions, at least one per split with a positive fraction
    when there are enough cases, the rest to train."""
    val, test = (int(round(f * n)) for f in fractions[1:])
    if n >= 3:
        val = max(val, 1) if fractions[1] > 0 else val
        test = max(test, 1) if fractions[2] > 0 else test
    while n - val - test < (1 if fractions[0] > 0 and n >= 3 else 0):
        if test >= val and test > 0:
            test -= 1
        else:
            val -= 1
    return [n - val - test, val, test]


def make_splits(case_ids: list[str], source: str, cfg: SplitConfig) -> dict[str, list[str]]:
    """Split case ids by patient into train/validation/test.

    OpenKBP uses its official split. Otherwise a seeded split by cfg.fractions (7:1:2 by
    default): deterministic for a seed, independent of the input order, every case exactly
    once, every split non-empty when there are at least 3 cases.
    """
    ids = [str(c) for c in case_ids]
    dupes = sorted(c for c, n in Counter(ids).items() if n > 1)
    if dupes:
        raise input_error("split case list", f"duplicate case ids {dupes}", "each case once",
                          "check the case table for repeated folders")
    if not ids:
        raise input_error("split case list", "no cases", "at least one case", "check dataset.input_dir")
    if source == "openkbp":
        return openkbp_split(ids)
    ordered = sorted(ids, key=_natural_key)
    order = np.random.default_rng(cfg.seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in order]
    n_train, n_val, _ = _counts(len(ids), list(cfg.fractions))
    parts = [shuffled[:n_train], shuffled[n_train:n_train + n_val], shuffled[n_train + n_val:]]
    return {name: sorted(part, key=_natural_key) for name, part in zip(SPLITS, parts)}


EVALUATE_KEY = "evaluate_on"  # splits.json: the name of the split the workflow predicts and evaluates


def write_splits(path: Path, splits: dict[str, list[str]], evaluate_on: str | None = None) -> None:
    """Write the splits (and, when given, the evaluated split's name) as JSON atomically."""
    data: dict = {name: list(splits.get(name, [])) for name in SPLITS}
    if evaluate_on is not None:
        data[EVALUATE_KEY] = evaluate_on
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")

"""A source's ROI names -> the dataset's canonical ROIs, one matcher for DICOM and OpenKBP.

Names compare ignoring case, spaces and underscores, with dataset.aliases; dataset.ignore_rois
are skipped. Unknown names only warn (clinical structure sets hold helper structures: rings,
optimisation volumes); two names for one ROI, one alias for two ROIs, or a missing ROI of
dataset.required_rois are errors.
"""

from __future__ import annotations

import re
from pathlib import Path

from dosediff.config import DatasetConfig
from dosediff.errors import input_error, warn


def normalise_roi_name(name: str) -> str:
    """Name as compared with the config: case, whitespace and underscores ignored."""
    return re.sub(r"[\s_]+", "", str(name)).lower()


def _lookup(dataset: DatasetConfig, case_id: str) -> dict[str, str]:
    """Normalised name -> canonical ROI, from dataset.rois and dataset.aliases."""
    lookup: dict[str, str] = {}
    for canon in dataset.rois:
        for name in [canon, *dataset.aliases.get(canon, [])]:
            key = normalise_roi_name(name)
            if lookup.get(key, canon) != canon:
                raise input_error("setting dataset.aliases", f"{name!r} names both {lookup[key]} and {canon}",
                                  "each name (ignoring case, spaces and underscores) to stand for one ROI",
                                  "remove the duplicate alias", case=case_id)
            lookup[key] = canon
    return lookup


def match_roi_names(names: list[str], dataset: DatasetConfig, path: Path, case_id: str,
                    item: str = "ROI") -> dict[str, str]:
    """Canonical ROI name -> the source's name for it; warns about names that map to nothing.
    `item` is what one name stands for in the source ("ROI", "file"), for the error message."""
    lookup = _lookup(dataset, case_id)
    ignored = {normalise_roi_name(n) for n in dataset.ignore_rois}
    matched: dict[str, str] = {}
    unknown = []
    for name in names:
        key = normalise_roi_name(name)
        if key in ignored:
            continue
        canon = lookup.get(key)
        if canon is None:
            unknown.append(name)
        elif canon in matched:
            raise input_error(path, f"a second {item} for ROI {canon} ({name!r}; the other: {matched[canon]!r})",
                              f"one {item} per canonical ROI of dataset {dataset.name!r} (names compared "
                              "ignoring case, spaces and underscores, aliases included)",
                              "list the one not to use in dataset.ignore_rois, or remove it", case=case_id)
        else:
            matched[canon] = name
    if unknown:
        warn(path, f"ROI names {unknown} match no ROI of dataset {dataset.name!r} {dataset.rois}",
             f"skipped. Fix: to use one, add it to dataset.aliases under its canonical name (e.g. aliases: "
             f"{{<ROI of dataset.rois>: [{unknown[0]!r}]}}); to silence this, list it in dataset.ignore_rois",
             case=case_id)
    return matched


def check_required_rois(dataset: DatasetConfig, present: list[str], names: list[str], matched: dict[str, str],
                        where: Path, case_id: str) -> None:
    """Every ROI of dataset.required_rois is among `present` (matched, with voxels), else an
    error listing the source's unmatched names (`names`: all of them)."""
    missing = [r for r in dataset.required_rois if r not in present]
    if missing:
        unmatched = [n for n in names if n not in matched.values()]
        empty = {r: matched[r] for r in missing if r in matched}
        raise input_error(where, f"required ROIs {missing} are missing or empty (matched but without "
                          f"voxels on the CT: {empty}; the source's unmatched ROIs: {unmatched})",
                          "every ROI of dataset.required_rois, under its name or an alias, with voxels on the CT",
                          "if one of the source's names is it, add that name to dataset.aliases; otherwise "
                          "contour it and export again, or list the case in dataset.exclude_cases", case=case_id)

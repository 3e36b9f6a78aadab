"""The one check for names that become paths or shell words (case ids, pseudonyms, experiment,
dataset and ROI names); the one place that names output files (prediction, std, RTDOSE, manifest, variant).

A safe name is letters, digits, `_`, `.` and `-`, starting with a letter or digit, with no
`..`: no path separator, no traversal, no whitespace, no shell metacharacter. The workflow
(common.smk) and the package's config loading both call `check_name`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from dosediff.errors import input_error

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_LENGTH = 128
# The same rule as a Snakemake wildcard constraint (embedded in Snakemake's own regex).
SAFE_WILDCARD = r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.\-]*"


def is_safe_name(name: object) -> bool:
    """True for a name that is safe as a file name and a shell word."""
    return (isinstance(name, str) and len(name) <= MAX_LENGTH and bool(SAFE_NAME.match(name))
            and ".." not in name)


def check_name(name: object, setting: str) -> str:
    """`name` if safe, else an InputError naming the setting and the value."""
    if not is_safe_name(name):
        raise input_error(f"setting {setting}", f"name {name!r}",
                          f"a name of letters, digits, '_', '.' and '-' (starting with a letter or digit, "
                          f"no '..', at most {MAX_LENGTH} characters)",
                          "rename it, e.g. replace spaces and slashes by '_'")
    return name


def check_names(names: Iterable[object], setting: str) -> None:
    for name in names:
        check_name(name, setting)


def check_pseudonyms(pseudonyms: Mapping[str, str]) -> None:
    """Every pseudonym safe and used for one folder only (two folders on one pseudonym would
    silently drop a patient)."""
    seen: dict[str, int] = {}
    for value in pseudonyms.values():
        check_name(value, "dataset.pseudonyms")
        seen[value] = seen.get(value, 0) + 1
    dup = sorted(v for v, n in seen.items() if n > 1)
    if dup:
        # Only the pseudonyms: the folder names (keys) may be patient IDs.
        raise input_error("setting dataset.pseudonyms", f"pseudonyms {dup} are given to more than one folder",
                          "one pseudonym per patient folder", "give each folder its own pseudonym")


def prediction_file(folder: Path, case: str) -> Path:
    """A case's predicted dose in a folder of predictions."""
    return Path(folder) / f"{case}.nii.gz"


def case_predictions(references: list[Path], predictions: list[Path], stage: str) -> list[tuple[str, Path, Path]]:
    """(case id, case folder, prediction) of each case folder and the prediction at its place,
    which must be the case's `<case>.nii.gz` (a stage's --references and --predictions)."""
    pairs = [(Path(r).name, Path(r), Path(p)) for r, p in zip(references, predictions)]
    if len(references) != len(predictions) or any(p != prediction_file(p.parent, c) for c, _, p in pairs):
        raise input_error(f"dosediff {stage} --predictions", f"files {[Path(p).name for p in predictions]} for "
                          f"case folders {[Path(r).name for r in references]}", "one <case>.nii.gz per case folder",
                          "pass each case's prediction, in the order of --references")
    return pairs


def output_paths(out_path: Path) -> dict[str, Path]:
    """Paths of one case's outputs from the dose path `<dir>/<case>.nii.gz`:
    dose, std (`<case>_std.nii.gz`), rtdose (`<case>_RTDOSE.dcm`), manifest (`<case>.json`)."""
    out_path = Path(out_path)
    name = out_path.name
    stem = name[:-7] if name.endswith(".nii.gz") else name[:-4] if name.endswith(".nii") else None
    if not stem:
        raise input_error(out_path, "an output name without .nii.gz", "<case>.nii.gz",
                          "name the prediction e.g. predictions/<experiment>/<case>.nii.gz")
    d = out_path.parent
    return {"dose": out_path, "std": d / f"{stem}_std.nii.gz", "rtdose": d / f"{stem}_RTDOSE.dcm",
            "manifest": d / f"{stem}.json"}


def variant_name(steps: int | str, seed: int | str) -> str:
    """A sampling study's prediction set, e.g. steps8_seed0 (also the rule's wildcard pattern)."""
    return f"steps{steps}_seed{seed}"

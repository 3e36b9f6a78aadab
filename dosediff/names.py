"""The one check for names that become paths or shell words: case ids, pseudonyms,
experiment names, dataset and ROI names.

A safe name is letters, digits, `_`, `.` and `-`, starting with a letter or digit, with no
`..`: no path separator, no traversal, no whitespace, no shell metacharacter. The workflow
(common.smk) and the package's config loading both call `check_name`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

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

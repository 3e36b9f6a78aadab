"""Errors for bad input: each names where, what was found, what was expected and the fix."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("dosediff")


class InputError(ValueError):
    """Bad user input (data file or setting). The message is meant for the user as is."""


def input_error(where: str | Path, found: str, expected: str, fix: str, case: str | None = None) -> InputError:
    """Build an InputError whose message names the case, the file or setting, the value,
    what was expected and how to fix it."""
    prefix = f"case {case}: " if case else ""
    return InputError(f"{prefix}{where}: {found}; expected {expected}. Fix: {fix}")


def warn(where: str | Path, found: str, consequence: str, case: str | None = None) -> None:
    """Log a warning about input that is usable but suspicious."""
    prefix = f"case {case}: " if case else ""
    log.warning(f"{prefix}{where}: {found}; {consequence}")

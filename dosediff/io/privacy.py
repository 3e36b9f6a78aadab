"""Messages about a patient's source files show paths relative to the case, never the
source folder (whose name, or a parent's, may be a patient ID)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dosediff.errors import InputError

log = logging.getLogger("dosediff")


class _Rewrite(logging.Filter):
    def __init__(self, scrub) -> None:
        super().__init__()
        self.scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.scrub(record.getMessage()), ()
        return True


@contextmanager
def case_relative_paths(folder: Path, case_id: str) -> Iterator[None]:
    """Within the block, dosediff's log records and InputErrors show `<folder>/x` as `<case_id>/x`."""
    folder = Path(folder)
    prefixes = sorted({str(folder), str(folder.absolute()), str(folder.resolve())}, key=len, reverse=True)
    label = f"<{case_id}>"

    def scrub(text: str) -> str:
        for prefix in prefixes:
            text = text.replace(prefix, label)
        return text

    rewrite = _Rewrite(scrub)
    log.addFilter(rewrite)
    try:
        yield
    except InputError as err:
        raise InputError(scrub(str(err))) from None
    finally:
        log.removeFilter(rewrite)

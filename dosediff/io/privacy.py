"""Messages about a patient's source files show paths relative to the case, never the
source folder (whose name, or a parent's, may be a patient ID), and never the patient's ID
or name inside a file name (Eclipse exports `CT.<PatientID>.Image 4.dcm`): the readers hand
each header's PatientID and PatientName to `hide_patient_fields`, and a pseudonymised
folder's own name is hidden too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dosediff.errors import InputError

log = logging.getLogger("dosediff")
MIN_HIDDEN = 3  # shorter values (initials) would garble messages more than they identify
PATIENT_LABEL = "<patient id>"
_hidden: list[set[str]] = []  # identifiers of the case being read, per active block (innermost last)


def hide_patient_fields(ds) -> None:
    """Hide this header's PatientID and PatientName parts from messages of the current block."""
    if not _hidden:
        return
    for keyword in ("PatientID", "PatientName"):
        try:
            text = str(ds.get(keyword, "") or "")
        except Exception:  # a damaged value: nothing to hide, the reader reports the element
            continue
        for part in [text, *text.replace("^", " ").split()]:
            if len(part.strip()) >= MIN_HIDDEN:
                _hidden[-1].add(part.strip())


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
    hidden = {name for name in (folder.name, folder.resolve().name) if name != case_id and len(name) >= MIN_HIDDEN}

    def scrub(text: str) -> str:
        for prefix in prefixes:
            text = text.replace(prefix, label)
        for value in sorted(hidden, key=len, reverse=True):
            text = text.replace(value, PATIENT_LABEL)
        return text

    rewrite = _Rewrite(scrub)
    log.addFilter(rewrite)
    _hidden.append(hidden)
    try:
        yield
    except InputError as err:
        raise InputError(scrub(str(err))) from None
    finally:
        _hidden.pop()
        log.removeFilter(rewrite)

"""Atomic writes: a temporary sibling that replaces the target only once it is complete, so
a failure or a killed job never leaves a half-written file or folder behind.

Temporaries are named `.<name>.tmp-<pid>` (plus a suffix where a writer picks its format
from the extension); those of a killed job (its process gone) are
removed the next time the same target is written, so they do not pile up.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dosediff.errors import input_error


def _checked_target(path: Path) -> Path:
    """The target, refused when its name would make the temporary or the replace act on a
    parent folder (`..`, `.`, empty) — e.g. a case id of `..` must not delete the dataset."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise input_error(path, f"output name {path.name!r}", "a file or folder name inside its parent",
                          "use a case id or file name without '..' (see dosediff/names.py)")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove `.<name>.tmp-<pid>` siblings of `path` whose process is no longer running."""
    removed = []
    prefix = f".{path.name}.tmp-"
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f"{prefix}*"):
        pid = tmp.name[len(prefix):].split(".")[0]  # before any format suffix
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


@contextmanager
def atomic_file(path: Path, fsync: bool = False, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` (ending in `suffix`) that replaces it if the block
    succeeds; with fsync, the data reach the disk before the rename makes them current."""
    path = _checked_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if tmp.exists():  # libraries that write through mkstemp leave 0600; outputs are as open() makes them
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces `out_dir` only if the block succeeds."""
    out_dir = _checked_target(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)

"""Reading DICOM attribute values safely: every numeric tag goes through `number`, `integer`
or `floats`, which name the tag and the file when a value is missing, damaged, non-numeric,
multi-valued where one is expected, not finite, or out of bounds. Pixel data are checked
against Rows x Columns x frames x bits before they are decoded, and sizes are bounded
before anything is allocated.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset

from dosediff.errors import input_error

MAX_SIDE = 4096  # Rows, Columns: CT and dose grids are at most 1024 in practice
MAX_FRAMES = 4096  # RTDOSE frames
MAX_VOXELS = 1 << 30  # one volume (CT series or dose grid): 2 GiB as int16
# pydicom's value validation logs the offending value (a name, a birth date...) on its own
# logger; dosediff checks the values it uses itself, so that validation is off.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
FIX = "re-export the file from the planning system or scanner"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def value(ds: Dataset, keyword: str, path: Path, case_id: str) -> Any:
    """The attribute's value (None when absent); a value pydicom cannot convert is an input error."""
    try:
        with warnings.catch_warnings(action="ignore"):
            return ds.get(keyword)
    except Exception as exc:  # pydicom converts lazily: ValueError, TypeError, KeyError...
        raise input_error(path, f"{keyword} cannot be read ({type(exc).__name__}: the value is damaged)",
                          f"a valid {keyword}", FIX, case=case_id) from None


def floats(ds: Dataset, keyword: str, n: int, path: Path, case_id: str) -> np.ndarray:
    """Attribute `keyword` as n finite floats, or an input error naming the tag and the file."""
    raw = value(ds, keyword, path, case_id)
    fix = FIX + "; this attribute is required"
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        raise input_error(path, f"no {keyword}", f"{n} numbers", fix, case=case_id)
    try:
        arr = np.asarray(raw if n > 1 else [raw], dtype=float).ravel()
    except (TypeError, ValueError):
        raise input_error(path, f"{keyword} = {_short(raw)}", f"{n} numbers", fix, case=case_id) from None
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise input_error(path, f"{keyword} = {[float(v) for v in arr[:8]]}", f"{n} finite numbers", fix,
                          case=case_id)
    return arr


def number(ds: Dataset, keyword: str, path: Path, case_id: str, default: float | None = None,
           lo: float = -np.inf, hi: float = np.inf) -> float | None:
    """One finite number in [lo, hi] (`default` when absent or empty), or an input error."""
    raw = value(ds, keyword, path, case_id)
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        return default
    try:
        arr = np.asarray(raw, dtype=float).ravel()  # a DS string, a number or a MultiValue
    except (TypeError, ValueError):
        raise input_error(path, f"{keyword} = {_short(raw)}", "one number", FIX, case=case_id) from None
    if arr.size != 1:
        raise input_error(path, f"{keyword} holds {arr.size} values", "one number", FIX, case=case_id)
    out = float(arr[0])
    if not np.isfinite(out) or not lo <= out <= hi:
        raise input_error(path, f"{keyword} = {out:g}", f"a finite number in [{lo:g}, {hi:g}]", FIX, case=case_id)
    return out


def integer(ds: Dataset, keyword: str, path: Path, case_id: str, default: int | None = None,
            lo: int = 1, hi: int = MAX_SIDE) -> int:
    """One integer in [lo, hi]; absent without a default is an input error."""
    out = number(ds, keyword, path, case_id, default=None if default is None else float(default), lo=lo, hi=hi)
    if out is None:
        raise input_error(path, f"no {keyword}", f"an integer in [{lo}, {hi}]", FIX, case=case_id)
    if out != int(out):
        raise input_error(path, f"{keyword} = {out:g}", "an integer", FIX, case=case_id)
    return int(out)


def spacing_yx(ds: Dataset, path: Path, case_id: str) -> np.ndarray:
    """PixelSpacing [row (y), column (x)] mm, each positive and below 100 mm."""
    sp = floats(ds, "PixelSpacing", 2, path, case_id)
    if sp.min() <= 0 or sp.max() > 100:
        raise input_error(path, f"PixelSpacing = {[float(v) for v in sp]}", "two spacings in mm in (0, 100]", FIX,
                          case=case_id)
    return sp


def check_volume_size(shape: tuple[int, ...], path: Path, case_id: str) -> None:
    """Refuse a volume too large to allocate, before it is allocated."""
    n = int(np.prod([int(s) for s in shape], dtype=np.int64))
    if n > MAX_VOXELS:
        raise input_error(path, f"a volume of {' x '.join(map(str, shape))} voxels",
                          f"at most {MAX_VOXELS} voxels", FIX + "; the header's sizes are damaged or absurd",
                          case=case_id)


def check_pixel_length(ds: Dataset, path: Path, case_id: str) -> tuple[int, int, int]:
    """(frames, rows, columns), after checking that uncompressed PixelData holds exactly
    frames x Rows x Columns x samples x BitsAllocated/8 bytes (pydicom would trim or pad)."""
    rows, cols = integer(ds, "Rows", path, case_id), integer(ds, "Columns", path, case_id)
    frames = integer(ds, "NumberOfFrames", path, case_id, default=1, hi=MAX_FRAMES)
    samples = integer(ds, "SamplesPerPixel", path, case_id, default=1, hi=4)
    bits = integer(ds, "BitsAllocated", path, case_id, default=16, hi=64)
    if samples != 1 or bits not in (8, 16, 32):
        raise input_error(path, f"SamplesPerPixel {samples}, BitsAllocated {bits}",
                          "grey-scale images (1 sample) of 8, 16 or 32 bits", FIX, case=case_id)
    check_volume_size((frames, rows, cols), path, case_id)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return frames, rows, cols
    got = len(value(ds, "PixelData", path, case_id) or b"")
    want = frames * rows * cols * bits // 8
    if got not in (want, want + 1):  # + 1: the pad byte of an odd length
        raise input_error(path, f"PixelData of {got} bytes while Rows x Columns x frames x BitsAllocated "
                          f"({rows} x {cols} x {frames} x {bits} bits) say {want}",
                          "pixel data that match the image header", f"remove {path.name} or replace it with a "
                          "complete copy from the export (the file is damaged or cut short)", case=case_id)
    return frames, rows, cols


def pixels(ds: Dataset, path: Path, case_id: str) -> np.ndarray:
    """Decoded pixel data (length checked first), or an input error naming the file."""
    if "PixelData" not in ds:
        raise input_error(path, "no pixel data (the file may be cut short)", "an image with PixelData",
                          f"remove {path.name} or replace it with a complete copy", case=case_id)
    check_pixel_length(ds, path, case_id)
    try:
        with warnings.catch_warnings(action="ignore"):
            return ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise input_error(path, f"pixel data cannot be decoded ({type(exc).__name__}; transfer syntax "
                          f"{syntax})", "uncompressed or decodable pixel data",
                          "export the images uncompressed (e.g. `gdcmconv --raw in.dcm out.dcm`)",
                          case=case_id) from None

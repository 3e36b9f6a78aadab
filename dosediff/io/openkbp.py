"""OpenKBP patient folder (sparse CSV, plain or .xz) -> Case, and a dose back to the official CSV.

File format (the open-kbp repository, Babier et al., Med. Phys. 2021): header row `,data`, then `flat_index,value` rows, the index
0-based in C order into a 128x128x128 array; mask files (ROIs, possible_dose_mask) leave the
value empty; a ROI the patient lacks has no file. `voxel_dimensions.csv` holds three lengths
in mm: (in-plane, in-plane, slice).

Orientation: OpenKBP axis 0 runs anterior->posterior, axis 1 patient right->left, axis 2 is
the slice axis running superior->inferior. Case arrays are (z, y, x), so the array is
transposed with (2, 0, 1): z = OpenKBP axis 2, y = axis 0 (+y is posterior in LPS), x = axis 1
(+x is patient left in LPS). No axis is flipped, so the stored voxels keep their order and
the direction matrix carries the orientation: diag(1, 1, -1) (the slice index runs towards
inferior, i.e. -z in LPS). OpenKBP gives no origin; we use (0, 0, 0).

CT values in the files are HU + 1024 with air (0) omitted, so a voxel absent from ct.csv is
-1024 HU. Dose is float32 Gy exactly as written (absent voxels are 0 Gy).
"""

from __future__ import annotations

import io
import lzma
import warnings
from pathlib import Path

import numpy as np

from dosediff.atomic import atomic_file
from dosediff.config import DatasetConfig
from dosediff.errors import input_error, warn
from dosediff.io.roi_names import check_required_rois, match_roi_names
from dosediff.volume import MAX_DOSE_GY, Case, Geometry

SHAPE = (128, 128, 128)  # OpenKBP (axis0, axis1, axis2)
N_VOXELS = SHAPE[0] * SHAPE[1] * SHAPE[2]
CASE_SHAPE = (SHAPE[2], SHAPE[0], SHAPE[1])  # Case (z, y, x): axis2 S->I, axis0 A->P, axis1 R->L
CT_OFFSET = 1024  # file value = HU + 1024
AIR_HU = -CT_OFFSET
DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # slice index runs superior->inferior
RESERVED = ("ct", "dose", "possible_dose_mask", "voxel_dimensions")
MAX_CSV_BYTES = 256 << 20  # a dense 128^3 CSV is about 60 MB


def _find(folder: Path, stem: str) -> Path | None:
    """`<stem>.csv` or `<stem>.csv.xz` in folder (plain wins when both exist)."""
    for suffix in (".csv", ".csv.xz"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _stem(path: Path) -> str | None:
    name = path.name
    for suffix in (".csv.xz", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _read_bytes(path: Path, case_id: str) -> bytes:
    """The file's bytes (decompressed for .xz), bounded by MAX_CSV_BYTES."""
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise input_error(path, f"a file of {path.stat().st_size} bytes", f"at most {MAX_CSV_BYTES} bytes "
                              "(a full 128^3 volume is smaller)", "use the files of the open-kbp repository unchanged",
                              case=case_id)
        raw = path.read_bytes()
        if not path.name.endswith(".xz"):
            return raw
        unxz = lzma.LZMADecompressor()
        text = unxz.decompress(raw, max_length=MAX_CSV_BYTES)
    except OSError as exc:  # a folder named like a CSV, a symlink loop, a permission
        raise input_error(path, f"unreadable ({exc.strerror or type(exc).__name__})", "a readable OpenKBP CSV file",
                          "replace it with the file from the open-kbp repository", case=case_id) from None
    except lzma.LZMAError as exc:
        raise input_error(path, f"not a valid xz file ({exc})", "an xz-compressed OpenKBP CSV",
                          "re-download or re-compress the file", case=case_id) from None
    if not unxz.eof:
        raise input_error(path, "an xz file that is cut short or decompresses past the size bound",
                          "a complete xz-compressed OpenKBP CSV", "re-download the file", case=case_id)
    return text


def _read_sparse(path: Path, case_id: str, is_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse one sparse CSV -> (flat indices int64, values float64 or None for masks)."""
    text = _read_bytes(path, case_id)
    header, _, _ = text[:64].partition(b"\n")
    if header.strip().replace(b" ", b"") != b",data":
        raise input_error(path, f"header {header[:40]!r}", "the OpenKBP header ',data'",
                          "use the files of the open-kbp repository unchanged", case=case_id)
    index, values = _parse_rows(text, path, case_id, is_mask)
    if index.size and (index.min() < 0 or index.max() >= N_VOXELS):
        bad = int(index.min() if index.min() < 0 else index.max())
        raise input_error(path, f"flat index {bad} out of range", f"0 <= index < {N_VOXELS} (128^3, C order)",
                          "the file is not an OpenKBP 128^3 volume; check its source", case=case_id)
    seen = np.zeros(N_VOXELS, dtype=bool)  # 2 MB; ~10x cheaper than np.unique on a dose file
    seen[index] = True
    if np.count_nonzero(seen) != index.size:
        ordered = np.sort(index)
        dup = int(ordered[np.flatnonzero(np.diff(ordered) == 0)[0]])
        raise input_error(path, f"flat index {dup} listed more than once", "each voxel at most once",
                          "use the files of the open-kbp repository unchanged", case=case_id)
    if is_mask:
        return index, None
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        found = "empty or non-numeric value" if np.isnan(values[row]) else f"value {float(values[row]):g}"
        raise input_error(path, f"{found} on line {row + 2}", "a finite number on every line",
                          "use the files of the open-kbp repository unchanged", case=case_id)
    return index, values


def _parse_rows(text: bytes, path: Path, case_id: str, is_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(indices int64, values float64) of the rows after the header. Well-formed files are read
    with numpy alone (pandas costs 0.2 s of start-up per ingest); anything else goes through
    pandas' CSV reader, whose errors name the defect."""
    body = text.partition(b"\n")[2]
    n_rows = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
    with warnings.catch_warnings(action="error"):  # numpy warns and stops at the first bad field
        try:
            flat = np.fromstring(body.replace(b",", b" "), dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning):
            flat = None
    if flat is not None and flat.size == (1 if is_mask else 2) * n_rows:
        pairs = flat.reshape(n_rows, -1)
        index = pairs[:, 0]
        if np.array_equal(index, np.floor(index)) and np.all(np.abs(index) < 2.0**53):
            return index.astype(np.int64), (None if is_mask else pairs[:, 1])
    import pandas as pd

    try:
        df = pd.read_csv(io.BytesIO(text), engine="c", header=0, names=["index", "value"],
                         dtype={"index": np.int64, "value": np.float64})
    except (ValueError, OverflowError, pd.errors.ParserError) as exc:
        raise input_error(path, f"malformed CSV ({str(exc).splitlines()[0]})",
                          "rows 'flat_index,value' with an integer index",
                          "use the files of the open-kbp repository unchanged", case=case_id) from exc
    return df["index"].to_numpy(), df["value"].to_numpy()


def _check_dose(path: Path, values: np.ndarray, case_id: str) -> None:
    """Doses in [0, MAX_DOSE_GY] Gy; anything else is a damaged file, not a dose."""
    if values.size and (values.min() < 0 or values.max() > MAX_DOSE_GY):
        raise input_error(path, f"doses from {float(values.min()):.4g} to {float(values.max()):.4g} Gy",
                          f"doses in [0, {MAX_DOSE_GY:g}] Gy", "use the files of the open-kbp repository unchanged",
                          case=case_id)


def _dense(index: np.ndarray, values: np.ndarray | float, dtype: type, fill: float = 0) -> np.ndarray:
    """Sparse (flat OpenKBP C-order index, values) -> dense Case (z, y, x) array: the indices are
    moved to the Case order instead of transposing a dense array (~7x faster per file)."""
    i0, i1, i2 = np.unravel_index(index, SHAPE)
    flat = np.full(N_VOXELS, fill, dtype=dtype)
    flat[np.ravel_multi_index((i2, i0, i1), CASE_SHAPE)] = values
    return flat.reshape(CASE_SHAPE)


def to_openkbp_array(arr_zyx: np.ndarray) -> np.ndarray:
    """Case (z, y, x) array -> OpenKBP (128, 128, 128) array; the exact inverse of the reader's axis order (_dense)."""
    if arr_zyx.ndim != 3 or tuple(arr_zyx.shape) != CASE_SHAPE:
        raise input_error("to_openkbp_array", f"array shape {arr_zyx.shape}", "(128, 128, 128) on the OpenKBP grid",
                          "pass a dose on the original OpenKBP grid (use restore_to_original first)")
    return np.ascontiguousarray(arr_zyx.transpose(1, 2, 0))


def _read_spacing(path: Path, case_id: str) -> tuple[float, float, float]:
    """voxel_dimensions (in-plane, in-plane, slice) mm -> Case spacing (z, y, x)."""
    text = _read_bytes(path, case_id).decode("ascii", errors="replace")
    try:
        dims = [float(v) for v in text.split()]
    except ValueError:
        dims = []
    if len(dims) != 3 or not all(np.isfinite(dims)) or min(dims) < 0.01 or max(dims) > 100:
        raise input_error(path, f"content {text.strip()[:60]!r}", "three lengths in mm in [0.01, 100] "
                          "(in-plane, in-plane, slice)",
                          "restore voxel_dimensions.csv from the open-kbp repository", case=case_id)
    return (dims[2], dims[0], dims[1])


def read_openkbp_case(folder: Path, case_id: str, dataset: DatasetConfig, require_dose: bool = True) -> Case:
    """Read one OpenKBP patient folder (plain `.csv` or `.csv.xz`) into a Case on the 128^3 grid.

    CT: int16 HU (file value - 1024; voxels absent from the file are air, -1024 HU; values that
    would overflow int16 are clipped with a warning). Dose: float32 Gy as written. ROI masks in
    dataset.rois order (names matched by dosediff.io.roi_names); possible_dose_mask kept as
    Case.possible_dose.
    """
    folder = Path(folder)  # ingest.read_source_case has checked that it is a folder
    dims_path = _find(folder, "voxel_dimensions")
    if dims_path is None:
        raise input_error(folder / "voxel_dimensions.csv", "file missing", "voxel sizes in mm for this patient",
                          "copy voxel_dimensions.csv(.xz) from the open-kbp repository into the folder", case=case_id)
    spacing = _read_spacing(dims_path, case_id)
    ct = _read_ct(folder, case_id)
    dose = _read_dose(folder, case_id, require_dose)
    pdm_path = _find(folder, "possible_dose_mask")
    possible = None if pdm_path is None else _read_mask(pdm_path, case_id)
    masks = _read_rois(folder, dataset, case_id)
    geometry = Geometry(shape=CASE_SHAPE, spacing=spacing, origin=(0.0, 0.0, 0.0),
                        direction=DIRECTION)
    return Case(case_id=case_id, geometry=geometry, ct=ct, dose=dose, masks=masks, possible_dose=possible,
                prescription_gy=dataset.prescription_gy, meta={"source": "openkbp"})


def _read_ct(folder: Path, case_id: str) -> np.ndarray:
    ct_path = _find(folder, "ct")
    if ct_path is None:
        raise input_error(folder / "ct.csv", "file missing", "the patient's CT as ct.csv or ct.csv.xz",
                          "copy ct.csv(.xz) from the open-kbp repository into the folder", case=case_id)
    index, values = _read_sparse(ct_path, case_id, is_mask=False)
    hu = np.rint(values) - CT_OFFSET
    info = np.iinfo(np.int16)
    if hu.size and (hu.min() < info.min or hu.max() > info.max):
        warn(ct_path, f"CT values outside int16 HU range ({hu.min():.0f}..{hu.max():.0f} HU)",
             f"clipped to {info.min}..{info.max} HU", case=case_id)
        hu = np.clip(hu, info.min, info.max)
    return _dense(index, hu.astype(np.int16), np.int16, fill=AIR_HU)


def _read_dose(folder: Path, case_id: str, require_dose: bool) -> np.ndarray | None:
    dose_path = _find(folder, "dose")
    if dose_path is None:
        if require_dose:
            raise input_error(folder / "dose.csv", "file missing", "the planned dose as dose.csv or dose.csv.xz",
                              "add the dose file, or read the folder as a new case without dose "
                              "(require_dose=False)", case=case_id)
        return None
    index, values = _read_sparse(dose_path, case_id, is_mask=False)
    _check_dose(dose_path, values, case_id)
    return _dense(index, values.astype(np.float32), np.float32)


def _read_mask(path: Path, case_id: str) -> np.ndarray:
    index, _ = _read_sparse(path, case_id, is_mask=True)
    return _dense(index, 1, np.uint8)


def _read_rois(folder: Path, dataset: DatasetConfig, case_id: str) -> dict[str, np.ndarray]:
    """The ROI files matched to dataset.rois, in that order; required ROIs must be present."""
    files: dict[str, Path] = {}  # file stem -> file
    for path in sorted(folder.iterdir()):
        stem = _stem(path)
        if stem is None or stem in RESERVED:
            continue
        if path.name.endswith(".xz") and (folder / path.name[:-3]).is_file():
            continue  # both forms present: the plain file is read instead
        files[stem] = path
    matched = match_roi_names(list(files), dataset, folder, case_id, item="file")
    masks = {name: _read_mask(files[matched[name]], case_id) for name in dataset.rois if name in matched}
    check_required_rois(dataset, list(masks), list(files), matched, folder, case_id)
    return masks


def write_openkbp_dose_csv(dose_zyx: np.ndarray, path: Path) -> None:
    """Write a (z, y, x) dose on the OpenKBP grid in the official sparse format (nonzero voxels only).

    Values are written as the shortest text that reads back to the same float32; a path ending
    in `.xz` is compressed. The file appears atomically.
    """
    arr = to_openkbp_array(np.asarray(dose_zyx, dtype=np.float32))
    flat = arr.ravel()
    if not np.isfinite(flat).all():
        raise input_error(path, "dose contains NaN or infinite values", "finite doses in Gy",
                          "check the prediction before export")
    index = np.flatnonzero(flat)
    lines = np.char.add(np.char.add(index.astype(str), ","), flat[index].astype(str))
    body = (",data\n" + "\n".join(lines.tolist()) + ("\n" if index.size else "")).encode("ascii")
    path = Path(path)
    if path.name.endswith(".xz"):
        body = lzma.compress(body)
    with atomic_file(path) as tmp:
        tmp.write_bytes(body)

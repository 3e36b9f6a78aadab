"""One HDF5 file per preprocessed case (schema in DESIGN.md), written atomically.

Datasets: ct (Z,H,W) int16 HU; dose (Z,H,W) float32 Gy when known; body (Z,H,W) uint8;
masks (K,Z,H,W) uint8 in dataset.rois order; possible_dose (Z,H,W) uint8 when present; and
each distance representation psdm (dm) / msdm (voxels) / tsbdm (unitless), (K,Z,H,W).
Chunks are one slice ((1,H,W), (K,1,H,W)), gzip (preprocess.compression_level) with shuffle.

Distance maps are stored as int16 with a `scale` attribute (value = int16 * scale): PSDM at
1e-3 dm (0.1 mm), MSDM at 0.01 voxel, TSBDM at 1e-4; the step grows only if a value would
overflow int16. Compared with float16 (3 significant digits: 0.4 mm steps at 5 dm) this is
finer where it matters. Schema 2 stores each row as its first value and then the steps along
the row (attribute row_delta = 1): a distance map changes by about one voxel size per voxel,
so the steps are a handful of values that gzip packs to about half the bytes of the values
themselves. Lossless: int16 arithmetic wraps around, so the running sum gives back every
stored int16 exactly. Readers get float32 and read schema 1 files as before.
"""

from __future__ import annotations

import errno
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from dosediff.atomic import atomic_file
from dosediff.config import DEFAULT_GZIP_LEVEL
from dosediff.errors import InputError, input_error

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # 1: distance maps without row steps
QUANTUM = {"psdm": 1e-3, "msdm": 1e-2, "tsbdm": 1e-4}  # stored step per representation
UNITS = {"psdm": "dm", "msdm": "voxel", "tsbdm": "1", "ct": "HU", "dose": "Gy"}
DTYPES = {"ct": np.int16, "dose": np.float32, "body": np.uint8, "masks": np.uint8, "possible_dose": np.uint8}
_INT16_MAX = 32000  # a little below 32767, so rounding never overflows
_BLOCK = 1 << 16  # values per quantisation step: a 256 KB float32 temporary


def _quantise(values: np.ndarray, quantum: float) -> tuple[np.ndarray, float]:
    """float array -> (int16 array, scale) with values ~= int16 * scale.

    Worked through in blocks of _BLOCK values: the float32 temporary stays in cache, which
    is ~3x faster than whole-array temporaries on a (10, 128, 128, 128) stack; same values."""
    peak = float(np.maximum(values.max(), -values.min())) if values.size else 0.0
    scale = max(quantum, peak / _INT16_MAX)
    inv = np.float32(1.0 / scale)
    flat = np.ascontiguousarray(values).reshape(-1)
    out = np.empty(flat.shape, dtype=np.int16)
    buf = np.empty(min(_BLOCK, flat.size), dtype=np.float32)
    for start in range(0, flat.size, _BLOCK):
        part = buf[: min(_BLOCK, flat.size - start)]
        np.multiply(flat[start:start + part.size], inv, out=part, dtype=np.float32)
        out[start:start + part.size] = np.rint(part, out=part)  # float32 -> int16 as astype does
    return out.reshape(values.shape), scale


def _row_delta(values: np.ndarray) -> np.ndarray:
    """int16 (..., W) -> the same array holding each row's first value, then the steps along the
    row; in place, rows worked in blocks of about _BLOCK values (cache-sized temporaries).
    int16 subtraction wraps around, and so does the reader's running sum: lossless."""
    rows = values.reshape(-1, values.shape[-1])
    step = max(1, _BLOCK // max(1, rows.shape[1]))
    for start in range(0, rows.shape[0], step):
        block = rows[start:start + step]
        block[:, 1:] = np.diff(block, axis=1)  # np.diff computes into a new array first
    return values


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One slice per chunk: (1, H, W) or (K, 1, H, W)."""
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        return (shape[0], 1, shape[2], shape[3])
    raise ValueError(f"expected a (Z,H,W) or (K,Z,H,W) array, got shape {shape}")


def _attr_value(value):
    """Python value -> something h5py stores faithfully (nested/mixed values as JSON text)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return np.array(value, dtype=h5py.string_dtype())
    if isinstance(value, (list, tuple)) and not value:
        return np.zeros(0, dtype=np.float64)
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and any(isinstance(v, (list, dict)) for v in value)):
        return "json:" + json.dumps(value)
    if value is None:
        return "json:null"
    return value


def _from_attr(value):
    """h5py attribute -> plain Python (str, int, float, list)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return json.loads(value[5:]) if value.startswith("json:") else value
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_case_h5(path: Path, arrays: dict[str, np.ndarray], attrs: dict,
                  compression_level: int = DEFAULT_GZIP_LEVEL) -> None:
    """Write one case atomically (dosediff.atomic).

    `arrays` uses the schema's names; distance maps (psdm/msdm/tsbdm) are float and get
    quantised here. `attrs` are stored as file attributes next to schema_version.
    """
    # Built in memory, then written with plain file I/O: HDF5 writing straight to a full disk
    # failed, then crashed the process (SIGSEGV) while closing the file; a plain write raises
    # a clean OSError (ENOSPC) that the CLI reports.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        _write_all(f, arrays, attrs, compression_level)
    with atomic_file(path) as tmp:
        try:
            tmp.write_bytes(buffer.getbuffer())
        except OSError as exc:  # name the output, not the hidden temporary
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        verify_written(tmp, buffer.getbuffer())


def verify_written(path: Path, expected: memoryview) -> None:
    """Read a just-written file back and compare it byte for byte with what was written: a short
    write on a full disk must fail here, before the rename makes the file current. (Cheaper than
    decoding every chunk again, and stricter.)"""
    try:
        ok = path.read_bytes() == bytes(expected)  # bytes == memoryview compares item by item: 4x slower
    except OSError as exc:
        raise OSError(errno.EIO, f"HDF5 file unreadable right after writing ({exc}); disk full?", str(path)) from None
    if not ok:
        raise OSError(errno.EIO, f"HDF5 file on disk ({path.stat().st_size} bytes) differs from the {len(expected)} "
                      "bytes written; disk full?", str(path))


def _write_all(f: h5py.File, arrays: dict[str, np.ndarray], attrs: dict, compression_level: int) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    for key, value in attrs.items():
        f.attrs[key] = _attr_value(value)
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        scale = None
        if name in QUANTUM:
            arr, scale = _quantise(arr, QUANTUM[name])
            arr = _row_delta(arr)
        elif name in DTYPES:
            arr = arr.astype(DTYPES[name], copy=False)
        ds = f.create_dataset(name, data=arr, chunks=_chunks(arr.shape), compression="gzip",
                              compression_opts=int(compression_level), shuffle=True)
        if scale is not None:
            ds.attrs["scale"] = scale
            ds.attrs["row_delta"] = 1
        if name in UNITS:
            ds.attrs["unit"] = UNITS[name]


def _open(path: Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "file missing", "a preprocessed case (HDF5)", "run the preprocess step for this case")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise input_error(path, "not a readable HDF5 file (damaged or cut short)", "a preprocessed case (HDF5)",
                          "delete it and run the preprocess step for this case again") from None
    version = f.attrs.get("schema_version")
    if version not in READABLE_SCHEMAS:
        f.close()
        raise input_error(path, f"schema_version {version}", f"schema_version {' or '.join(map(str, READABLE_SCHEMAS))}",
                          "re-run the preprocess step with this version of dosediff")
    return f


def _damaged(path: Path) -> Exception:
    return input_error(path, "a damaged or cut-short HDF5 file (its data cannot be read)", "a preprocessed case "
                       "(HDF5)", "delete it and run the preprocess step for this case again")


@contextmanager
def _reading(path: Path) -> Iterator[h5py.File]:
    """The open file; a read error inside names the file. A file damaged inside can open fine and
    then fail as h5py meets it: OSError on a chunk, None for an unreadable object header
    (AttributeError), KeyError or ValueError for broken links or attributes."""
    try:
        with _open(path) as f:
            yield f
    except InputError:
        raise
    except (OSError, KeyError, RuntimeError, AttributeError, TypeError, ValueError):
        raise _damaged(Path(path)) from None


Coding = tuple[float | None, bool]  # (scale, row_delta) of a stored dataset


def _coding(ds: h5py.Dataset) -> Coding:
    return ds.attrs.get("scale"), bool(ds.attrs.get("row_delta", 0))


def _scaled(raw: np.ndarray, coding: Coding) -> np.ndarray:
    """Stored values -> float32 in their unit for quantised distance maps; others as stored."""
    scale, row_delta = coding
    if scale is None:
        return raw
    if row_delta:
        raw = np.cumsum(raw, axis=-1, dtype=np.int16)  # wraps around as the writer's steps did
    return raw.astype(np.float32) * np.float32(scale)


def read_case_h5(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read every dataset (distance maps as float32 in their unit) and the attributes."""
    with _reading(path) as f:
        arrays = {name: _scaled(ds[()], _coding(ds)) for name, ds in f.items()}
        attrs = {key: _from_attr(value) for key, value in f.attrs.items()}
    return arrays, attrs


class H5Case:
    """Lazy reader of one case: `slice(z)` returns every dataset's axial slice z, `array(name)`
    one whole dataset; distance maps come as float32 in their unit.

    The file opens on first slice and stays open in this process; a pickled or forked copy
    (DataLoader workers) opens its own handle, as one h5py handle must not cross a fork.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid = os.getpid()
        with _reading(self.path) as f:
            self.attrs = {key: _from_attr(value) for key, value in f.attrs.items()}
            self.names = list(f.keys())
            self.shape = tuple(int(v) for v in f["ct"].shape)  # (Z, H, W)
            self._coding = {name: _coding(ds) for name, ds in f.items()}

    @property
    def n_slices(self) -> int:
        return self.shape[0]

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = _open(self.path), os.getpid()
        return self._file

    def array(self, name: str) -> np.ndarray:
        """The whole dataset `name`, read with a handle of its own (the slice handle stays unopened)."""
        with _reading(self.path) as f:
            return _scaled(f[name][()], _coding(f[name]))

    def slice(self, z: int, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Axial slice z of the named datasets (default all): (H, W) for volumes, (K, H, W) for
        ROI stacks."""
        if not 0 <= z < self.n_slices:
            raise IndexError(f"{self.path}: slice {z} outside 0..{self.n_slices - 1}")
        f = self._handle()
        out = {}
        for name in self.names if names is None else names:
            ds = f[name]
            try:
                out[name] = _scaled(ds[z] if ds.ndim == 3 else ds[:, z], self._coding[name])
            except OSError:  # a chunk of a damaged file
                raise _damaged(self.path) from None
        return out

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> H5Case:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}

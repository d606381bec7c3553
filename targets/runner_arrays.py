"""Arrays read slice by slice, never whole: .npy files and the members of an uncompressed .npz.

Self-contained (Python >= 3.8 and numpy only) because the device runner uses it too: the SSH transport
copies it next to runner.py. A slice is read with one read into a fresh array, so memory stays
at the slice's size whatever the file's (a memory map would do the same I/O, but every page it touches
counts in the process's resident set until the kernel takes it back).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (30 bytes)


class NpyArray:
    """A C-ordered array stored at `offset` of `path`: shape, dtype, len(), x[i], x[a:b], x[index array] and
    np.asarray(x) (which reads it all) work as on an ndarray."""

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.path, self.offset = str(path), int(offset)
        self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        self._row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize if self.shape else 0

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, start: int, stop: int) -> np.ndarray:
        count = max(0, stop - start)
        out = np.empty((count,) + self.shape[1:], self.dtype)
        if count:
            with open(self.path, "rb", buffering=0) as f:
                f.seek(self.offset + start * self._row)
                got = f.readinto(out.reshape(-1).view(np.uint8).data)
                if got != count * self._row:
                    raise OSError(f"{self.path}: truncated array ({got} of {count * self._row} bytes)")
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            return self[key[0]][(slice(None),) + key[1:]]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                return self._rows(start, max(start, stop))
            picked = np.arange(start, stop, step)
            if not picked.size:
                return np.empty((0,) + self.shape[1:], self.dtype)
            lo = int(picked.min())
            return self._rows(lo, int(picked.max()) + 1)[picked - lo]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"index {key} out of range for {self.shape[0]} samples")
            return self._rows(i, i + 1)[0]
        index = np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return np.stack([self[int(i)] for i in index.reshape(-1)]) if index.size else \
            np.empty((0,) + self.shape[1:], self.dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if not self.shape:  # a 0-d member (a name, a number)
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                scalar = np.frombuffer(f.read(self.dtype.itemsize), self.dtype).reshape(())
            return scalar.copy() if dtype is None else scalar.astype(dtype)
        whole = self._rows(0, self.shape[0])
        return whole if dtype is None else whole.astype(dtype)

    def __repr__(self) -> str:
        return f"NpyArray({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def _header(f: Any) -> tuple[tuple[int, ...], Any, bool]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return shape, dtype, fortran


def open_npy(path: str | Path) -> NpyArray:
    """A .npy file, read lazily (C order, no object dtype)."""
    with open(path, "rb") as f:
        shape, dtype, fortran = _header(f)
        offset = f.tell()
    if fortran and len(shape) > 1:
        raise ValueError(f"{path}: Fortran-ordered arrays are not supported; save with np.save(np.ascontiguousarray(x))")
    if dtype.hasobject:
        raise ValueError(f"{path}: object arrays are not supported")
    return NpyArray(path, offset, shape, dtype)


def npz_members(path: str | Path) -> dict[str, NpyArray | None]:
    """Every member of an .npz by key: lazy for stored (np.savez) members, None for compressed ones (those
    must be read whole, e.g. with np.load)."""
    out: dict[str, NpyArray | None] = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            if info.compress_type != zipfile.ZIP_STORED:
                out[key] = None
                continue
            f.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
            f.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
            shape, dtype, fortran = _header(f)
            out[key] = None if (fortran and len(shape) > 1) or dtype.hasobject else \
                NpyArray(path, f.tell(), shape, dtype)
    return out


READ_LOG = "EDGEPIPE_READ_LOG"  # a file: each read of an eval set's labels appends its path (audits, tests)


def note_read(what: str | Path) -> None:
    """Append `what` to the file named by $EDGEPIPE_READ_LOG, when set: who read which split's labels."""
    import os

    log = os.environ.get(READ_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{what}\n")


def read_member(path: str | Path, key: str) -> Any:
    """One .npz member: lazy when stored uncompressed, else read whole. Reading the labels (`y`) is noted
    (note_read)."""
    if key == "y":
        note_read(Path(path).resolve())
    member = npz_members(path).get(key)
    if member is not None:
        return member
    with np.load(str(path), allow_pickle=False) as data:
        return data[key]


def batches(x: Any, size: int) -> Iterator[np.ndarray]:
    """x in slices of `size` samples (each a plain ndarray)."""
    for i in range(0, len(x), size):
        yield np.asarray(x[i : i + size])


def write_npz(path: str | Path, arrays: dict[str, Any], chunk: int = 256) -> None:
    """An uncompressed .npz (what np.savez writes) from arrays or anything sliceable with shape and dtype,
    written `chunk` samples at a time: np.load reads it as usual, npz_members lazily."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for key, x in arrays.items():
            shape: Sequence[int] = tuple(x.shape)
            dtype = np.dtype(x.dtype)
            with z.open(key + ".npy", "w", force_zip64=True) as out:
                np.lib.format.write_array_header_2_0(
                    out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
                if len(shape) == 0:
                    out.write(np.asarray(x, dtype).tobytes())
                    continue
                for part in batches(x, chunk):
                    out.write(np.ascontiguousarray(part, dtype=dtype).tobytes())

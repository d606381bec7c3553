"""Data larger than memory: splits stored as .npy files (or folders of .npy shards) read a batch at a time,
with preprocessing applied per batch, so that no stage holds a whole split.

`Samples` is what the pipeline passes around for a split: an ndarray (an .npz or an image folder, read whole)
or a lazy array from here. Both have shape, dtype, len(), slicing and fancy indexing; np.asarray() reads a
lazy one whole, so code that needs all of it (a metric over every sample's input) still works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np

from targets.runner_arrays import NpyArray, open_npy
from targets.runner_arrays import batches as read_batches

BATCH = 256  # samples per read when a stage walks a lazy split
# samples per Keras predict call (Keras' default): MobileNetV2 1.0 @224 on 512 images took 12.3 s and a 5.8 GB
# peak at 256 per call, 6.4 s and 2.1 GB at 32 (bench/pipeline_floor's model, AVX-512 VNNI AMD EPYC, 2026-12-07)
PREDICT_BATCH = 32


class Lazy:
    """What the lazy arrays here share: shape, len(), ndim, and np.asarray() reading every row."""

    shape: tuple[int, ...]
    dtype: Any

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[0 : len(self)]
        return whole if dtype is None else whole.astype(dtype)


class Shards(Lazy):
    """Several arrays (the .npy shards of a folder, in name order) as one along the first axis."""

    def __init__(self, parts: Sequence[NpyArray]) -> None:
        if not parts:
            raise ValueError("no shards")
        rest = {p.shape[1:] for p in parts}
        kinds = {p.dtype for p in parts}
        if len(rest) != 1 or len(kinds) != 1:
            raise ValueError(f"shards differ in sample shape or dtype ({sorted(map(str, rest))}, {sorted(map(str, kinds))})")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(len(self))
            pieces = [p[max(start - s, 0): max(min(stop - s, len(p)), 0)]
                      for p, s in zip(self.parts, self.starts[:-1], strict=True)
                      if s < stop and s + len(p) > start]
            return np.concatenate(pieces) if pieces else np.empty((0, *self.shape[1:]), self.dtype)
        if isinstance(key, (int, np.integer)):
            i = int(key) % len(self)
            part = int(np.searchsorted(self.starts, i, side="right")) - 1
            return self.parts[part][i - int(self.starts[part])]
        index = np.arange(len(self))[key]
        return np.stack([self[int(i)] for i in index]) if index.size else np.empty((0, *self.shape[1:]), self.dtype)


class Preprocessed(Lazy):
    """`fn` (float32 preprocessing) applied to each slice of `base` as it is read."""

    def __init__(self, base: Any, fn: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...] | None = None) -> None:
        self.base, self.fn = base, fn
        self.shape: tuple[int, ...] = tuple(base.shape) if shape is None else shape  # fn may add an axis
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.fn(np.asarray(self.base[key]))


class Subset(Lazy):
    """The rows `index` (sorted) of a lazy array, read on demand."""

    def __init__(self, base: Any, index: np.ndarray) -> None:
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        self.shape: tuple[int, ...] = (len(self.index), *base.shape[1:])
        self.dtype = base.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return np.asarray(self.base[int(rows)])
        if rows.size and np.all(np.diff(rows) == 1):  # contiguous: one read
            return np.asarray(self.base[int(rows[0]) : int(rows[-1]) + 1])
        return np.asarray(self.base[rows])


class LazyArray(Protocol):
    """What a lazy split offers (an image folder's files are one: pipeline.inputs.images)."""

    shape: tuple[int, ...]
    dtype: Any

    def __len__(self) -> int: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray: ...


Samples: TypeAlias = np.ndarray | NpyArray | Shards | Preprocessed | Subset | LazyArray


def is_lazy(x: Any) -> bool:
    return not isinstance(x, np.ndarray) and hasattr(x, "__array__") and hasattr(x, "shape")


def take(x: Samples, index: np.ndarray) -> Samples:
    """x[index] (sorted row indices): a lazy view for a lazy x, an array otherwise."""
    return Subset(x, np.sort(index)) if is_lazy(x) else x[index]


def predict_batches(predict: Callable[[Any], Any], x: Samples, size: int = BATCH) -> np.ndarray:
    """predict(x) for an array; for a lazy x, predict on each batch as it is read, outputs concatenated."""
    if not is_lazy(x):
        return np.asarray(predict(x))
    return np.concatenate([np.asarray(predict(b)) for b in batches(x, size)])


def fit_data(x: Samples, y: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Model.fit's data arguments: the arrays for arrays; for a lazy x a keras PyDataset that reads one batch
    at a time (Keras shuffles the batches' order each epoch)."""
    if not is_lazy(x):
        return {"x": x, "y": y, "batch_size": batch_size}
    return {"x": _dataset(x, y, batch_size)}


def validation_data(held: tuple[Samples, np.ndarray] | None, batch_size: int) -> Any:
    if held is None or not is_lazy(held[0]):
        return held
    return _dataset(held[0], held[1], batch_size)


def _dataset(x: Samples, y: np.ndarray, batch_size: int) -> Any:
    import keras

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return -(-len(x) // batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            return np.asarray(x[i * batch_size : (i + 1) * batch_size]), y[i * batch_size : (i + 1) * batch_size]

    return Batches()


def batches(x: Samples, size: int = BATCH) -> Iterator[np.ndarray]:
    """x in slices of `size` samples, each a plain ndarray (the runner's own slicing, BATCH by default)."""
    return read_batches(x, size)


def open_split(path: Path) -> NpyArray | Shards:
    """A split stored as NAME.npy, or as a folder NAME/ of .npy shards (read in name order)."""
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise ValueError(f"{path}: a shard folder without .npy files")
        return Shards([open_npy(f) for f in files])
    return open_npy(path)


def split_path(folder: Path, key: str) -> Path | None:
    """folder/KEY.npy or folder/KEY/ (shards), whichever exists."""
    for candidate in (folder / f"{key}.npy", folder / key):
        if candidate.exists():
            return candidate
    return None


def max_value(x: Samples) -> float:
    """The largest value of a split, read a batch at a time."""
    return max((float(np.max(b)) for b in batches(x) if b.size), default=0.0)

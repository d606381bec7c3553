"""Data sets: an npz with train/test splits or an image folder; one preprocessing for every consumer."""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache import file_digest
from pipeline.compress.base import TrainData
from pipeline.config import DataSection
from pipeline.errors import DataError
from pipeline.inputs.arrays import Preprocessed, Samples, is_lazy, open_split, split_path
from pipeline.inputs.images import ImageFiles, check_readable
from pipeline.measure.metric import Labels
from targets.runner_arrays import write_npz

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
VAL_KEYS = ("x_val", "y_val")  # optional: the validation split every choice of the build is judged on
IN_MEMORY_BYTES = 256 << 20  # an image folder decodes to at most this much: held in memory, else read lazily
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass(frozen=True)
class Preprocess:
    """x / scale, then (x - mean) / std per channel (last axis)."""

    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """A new float32 array (one copy of x, then in place: no further full-size temporaries)."""
        out = np.array(x, dtype=np.float32, copy=True)
        out /= np.float32(self.scale)
        if self.mean is not None and self.std is not None:
            out -= np.asarray(self.mean, np.float32)
            out /= np.asarray(self.std, np.float32)
        return out

    def key(self) -> str:
        return f"{self.scale}|{self.mean}|{self.std}"


@dataclass(frozen=True)
class RawData:
    """The four splits as read: x lazy (read a batch at a time) for a folder of .npy splits; a model with several
    inputs (outputs) has {name: array} for x (y): npz keys `x_train.<input name>`, `y_train.<output name>`
    (pipeline.inputs.named)."""

    x_train: Samples | dict[str, np.ndarray]
    y_train: np.ndarray | dict[str, np.ndarray]
    x_test: Samples | dict[str, np.ndarray]
    y_test: np.ndarray | dict[str, np.ndarray]
    source: str  # a content hash or an example's name, for cache keys
    x_val: Samples | dict[str, np.ndarray] | None = None  # None: held out of the training split (inputs.holdout)
    y_val: np.ndarray | dict[str, np.ndarray] | None = None
    validation: str = "given"  # where x_val comes from: "given" (the user's) or "held out" (of x_train)

    @property
    def named(self) -> bool:
        """Whether any split uses named keys (several inputs or outputs)."""
        return any(isinstance(v, dict) for v in (self.x_train, self.y_train, self.x_test, self.y_test, self.x_val,
                                                 self.y_val))


def _split(files: list[str], data: Any, key: str) -> np.ndarray | dict[str, np.ndarray] | None:
    """`key` as one array, or its `key.<name>` arrays as {name: array}; None when neither is there."""
    if key in files:
        return np.asarray(data[key])
    named = {k[len(key) + 1 :]: np.asarray(data[k]) for k in files if k.startswith(key + ".")}
    return named or None


def read_data(path: Path) -> RawData:
    """`[data] path`: an .npz, or a folder of per-split .npy files / shard folders (data larger than memory)."""
    return read_npy_folder(path) if path.is_dir() else read_npz(path)


def read_npy_folder(folder: Path) -> RawData:
    """x_train.npy, y_train.npy, x_test.npy, y_test.npy in `folder` (each may instead be a folder of .npy shards,
    read in name order): the x splits are read lazily, a batch at a time; the labels whole."""
    found = {k: _split_paths(folder, k) for k in NPZ_KEYS}
    missing = [k for k, v in found.items() if not v]
    if missing:
        raise DataError(f"{folder}: a data folder needs {', '.join(f'{k}.npy' for k in NPZ_KEYS)} (or a folder of "
                        f".npy shards per split; several inputs or outputs: x_train.<input>.npy, ...); missing "
                        f"{', '.join(missing)}")
    val = {k: _split_paths(folder, k) for k in VAL_KEYS}
    _check_val_pair(folder, {k: v or None for k, v in val.items()}, ".npy")
    arrays: dict[str, Any] = {k: None for k in VAL_KEYS}
    digests: list[str] = []
    for key, paths in {**found, **{k: v for k, v in val.items() if v}}.items():
        named = {name: _open(path, key.startswith("x"), digests) for name, path in paths.items()}
        arrays[key] = named[""] if "" in named else named
    h = hashlib.sha256("|".join(digests).encode()).hexdigest()
    return RawData(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], source=f"npy:{h}",
                   x_val=arrays["x_val"], y_val=arrays["y_val"])


def _check_val_pair(where: Path, val: dict[str, Any], suffix: str = "") -> None:
    """x_val and y_val come together or not at all."""
    if (val["x_val"] is None) != (val["y_val"] is None):
        have, lack = ("x_val", "y_val") if val["y_val"] is None else ("y_val", "x_val")
        raise DataError(f"{where}: has {have}{suffix} but no {lack}{suffix}: give both (a validation split) or "
                        "neither (edgepipe then holds one out of the training split)")


def _split_paths(folder: Path, key: str) -> dict[str, Path]:
    """{"": KEY.npy or KEY/}, or {name: KEY.<name>.npy or KEY.<name>/} for named splits."""
    plain = split_path(folder, key)
    if plain is not None:
        return {"": plain}
    found = {}
    for p in sorted(folder.glob(f"{key}.*")):
        name = p.name[len(key) + 1 :].removesuffix(".npy")
        if name and (p.is_dir() or p.suffix == ".npy"):
            found[name] = p
    return found


def _open(path: Path, lazy: bool, digests: list[str]) -> Any:
    """One split (lazy for x, whole for labels); its files' digests are appended to `digests`."""
    try:
        out = open_split(path) if lazy else np.asarray(open_split(path))
        files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
        digests += [f"{f.name}:{file_digest(f)}" for f in files]
    except (OSError, ValueError, EOFError) as err:
        msg = " ".join(str(err).split())[:200]
        raise DataError(f"{path}: not a readable .npy array ({type(err).__name__}: {msg})") from None
    return out


def read_npz(path: Path) -> RawData:
    """The four splits of an .npz, each read once (npz members cannot be memory-mapped: numpy ignores
    mmap_mode for them). Anything that is not such a file is one DataError."""
    try:
        if not path.is_file():
            raise DataError(f"{path}: data file not found")
        with path.open("rb") as f:
            magic = f.read(6)
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
            raise DataError(f"{path}: not a readable .npz file (not a numpy.savez archive of "
                            f"{', '.join(NPZ_KEYS)})")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single .npy array, not an .npz with {', '.join(NPZ_KEYS)}")
        with loaded as data:
            arrays = {k: _split(list(data.files), data, k) for k in NPZ_KEYS}
            missing = [k for k, v in arrays.items() if v is None]
            if missing:
                raise DataError(f"{path}: npz is missing {', '.join(missing)} (needs {', '.join(NPZ_KEYS)}; a model "
                                "with several inputs or outputs: x_train.<input name>, y_train.<output name>)")
            arrays.update({k: _split(list(data.files), data, k) for k in VAL_KEYS})
            _check_val_pair(path, arrays)
        digest = file_digest(path)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: too large to load into memory") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, TypeError, AttributeError) as err:
        msg = " ".join(str(err).split())[:200]
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {msg})") from None
    return RawData(**arrays, source=f"npz:{digest}")  # type: ignore[arg-type]


def read_image_folder(folder: Path, size: tuple[int, int], channels: int, seed: int = 0) -> RawData:
    """One sub-folder per class (sorted names are class ids); a stratified 80/20 train/test split. The images
    are decoded a batch at a time when a stage reads them (pipeline.inputs.images); their headers now."""
    try:
        if not folder.is_dir():
            raise DataError(f"{folder}: image folder not found")
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        files = [(label, f) for label, cls in enumerate(classes) for f in sorted(cls.iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
    except OSError as err:
        raise DataError(f"{folder}: cannot read the image folder ({err.strerror or err})") from None
    if len(classes) < 2:
        raise DataError(f"{folder}: needs at least two class sub-folders")
    if len(files) < 4:
        raise DataError(f"{folder}: too few images ({len(files)})")
    check_readable([f for _, f in files])
    y = np.asarray([label for label, _ in files], np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: max(1, len(idx) // 5)]] = True
    images = ImageFiles([f for _, f in files], size, channels)
    h = hashlib.sha256(f"{size}|{channels}|".encode())
    for label, f in files:
        h.update(f"{label}|{f.relative_to(folder)}|{file_digest(f)}|".encode())
    train, held = images.subset(np.flatnonzero(~test)), images.subset(np.flatnonzero(test))
    if images.size_bytes() <= IN_MEMORY_BYTES:  # small: decoded once, not every epoch
        return RawData(np.asarray(train), y[~test], np.asarray(held), y[test], source=f"images:{h.hexdigest()}")
    return RawData(train, y[~test], held, y[test], source=f"images:{h.hexdigest()}")


def _check_labels(name: str, y: np.ndarray, num_classes: int | None) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{name}: labels must be integer class ids, got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.size and not np.all(np.isfinite(y.astype(np.float64))):
        raise DataError(f"{name}: labels contain NaN or inf")
    if y.size and not np.all(np.equal(np.mod(y.astype(np.float64), 1), 0)):
        raise DataError(f"{name}: labels must be integer class ids")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{name}: labels out of range (min {y.min()} < 0)")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise DataError(f"{name}: labels out of range (max {y.max()} >= the model's {num_classes} outputs)")
    return y


def check_targets(name: str, y: np.ndarray, labels: Labels, output_shape: tuple[int | None, ...],
                   num_classes: int) -> np.ndarray:
    """y as the metric needs it (see pipeline.measure.metric.Labels)."""
    y = np.asarray(y)
    if labels is Labels.CLASSES:
        return _check_labels(name, y, num_classes)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{name}: expected numbers for the metric, got dtype {y.dtype}")
    if not np.all(np.isfinite(y.astype(np.float64))):
        raise DataError(f"{name}: contains NaN or inf")
    if labels is Labels.BINARY:
        if y.reshape(y.shape[0], -1).shape[1] != 1 or not np.all(np.isin(y, (0, 1))):
            raise DataError(f"{name}: reconstruction_auc needs one label per sample, 0 = normal or 1 = anomalous")
        if name.startswith("y_test") and len(np.unique(y)) < 2:
            raise DataError(f"{name}: reconstruction_auc needs both normal (0) and anomalous (1) test samples")
        return y.reshape(-1).astype(np.int64)
    if labels is Labels.TARGETS:
        size = int(np.prod([d or 1 for d in output_shape]))
        if y.reshape(y.shape[0], -1).shape[1] != size:
            raise DataError(f"{name}: targets of shape {y.shape[1:]} do not fit the model output {output_shape}")
        return y.reshape((y.shape[0], *[d or 1 for d in output_shape])).astype(np.float32)
    return y  # REFERENCE (replaced by the reference model's outputs) and ANY (the user's function reads it)


def check_x(key: str, x: Samples, input_shape: tuple[int | None, ...], pre: Preprocess) -> Samples:
    """One input's samples checked against the model input and preprocessed (lazily for a lazy x)."""
    if x.dtype.kind not in "fiub":
        raise DataError(f"{key}: expected numbers, got dtype {x.dtype}")
    if len(x.shape) == 0:
        raise DataError(f"{key}: a single value, not an array of samples")
    if x.shape[0] == 0:
        raise DataError(f"{key}: no samples")
    add_channel = len(x.shape) == len(input_shape)  # e.g. grayscale images without a channel axis
    shape = (*x.shape, 1) if add_channel else tuple(x.shape)
    want = tuple(input_shape)
    if len(shape) != len(want) + 1 or any(w is not None and w != g for w, g in zip(want, shape[1:], strict=True)):
        shown = "x".join("?" if d is None else str(d) for d in want)
        raise DataError(f"{key}: shape {shape[1:]} does not fit the model input {shown}")
    channels = shape[-1]
    if pre.mean is not None and len(pre.mean) not in (1, channels):
        raise DataError(f"data.mean has {len(pre.mean)} values but {key} has {channels} channels")
    xf = _preprocessed(x, pre, add_channel)
    if not _all_finite(xf):
        raise DataError(f"{key}: contains NaN or inf")
    return xf


def prepare(raw: RawData, pre: Preprocess, input_shape: tuple[int | None, ...], num_classes: int,
            labels: Labels = Labels.CLASSES, output_shape: tuple[int | None, ...] = ()) -> TrainData:
    """Validate against the model's input shape and output width, then preprocess."""
    if raw.named:
        raise DataError("named npz keys (x_train.<input>, y_train.<output>) are for a model with several inputs or "
                        "outputs; this model has one of each: use x_train, y_train, x_test, y_test")
    splits: dict[str, Any] = {}
    for xk, yk in split_pairs(raw):
        x, y = getattr(raw, xk), getattr(raw, yk)
        if np.ndim(y) == 0 and len(x.shape) != 0:
            raise DataError(f"{yk}: a single value, not an array of samples")
        xf = check_x(xk, x, input_shape, pre)
        if x.shape[0] != np.asarray(y).shape[0]:
            raise DataError(f"{xk} has {x.shape[0]} samples but {yk} has {np.asarray(y).shape[0]}")
        splits[xk], splits[yk] = xf, check_targets(yk, y, labels, output_shape, num_classes)
    return TrainData(splits["x_train"], splits["y_train"], splits["x_test"], splits["y_test"], num_classes,
                     splits.get("x_val"), splits.get("y_val"))


def split_pairs(raw: RawData) -> tuple[tuple[str, str], ...]:
    """The (x, y) keys of the splits `raw` holds: train, test, and validation when there is one."""
    pairs = (("x_train", "y_train"), ("x_test", "y_test"))
    return pairs + ((("x_val", "y_val"),) if raw.x_val is not None else ())


def _preprocessed(x: Samples, pre: Preprocess, add_channel: bool) -> Samples:
    """pre(x) now for an array in memory; a lazy view that preprocesses each batch as it is read otherwise."""
    if is_lazy(x):
        if add_channel:
            return Preprocessed(x, lambda b: pre(b[..., None]), (*x.shape, 1))
        return Preprocessed(x, pre)
    return pre(np.asarray(x)[..., None] if add_channel else np.asarray(x))


def _all_finite(x: Samples, chunk: int = 4096) -> bool:
    """np.isfinite in chunks of samples: no full-size boolean temporary."""
    return all(bool(np.isfinite(x[i : i + chunk]).all()) for i in range(0, x.shape[0], chunk))


def preprocess_from(section: DataSection | None, default_scale: float = 1.0) -> Preprocess:
    if section is None:
        return Preprocess(scale=default_scale)
    mean = tuple(section.mean) if section.mean is not None else None
    std = tuple(section.std) if section.std is not None else None
    return Preprocess(section.scale, mean, std)


def write_eval(path: Path, data: TrainData, outputs: tuple[str, ...] = (), output: str = "",
               split: str = "test") -> None:
    """OUT/data/eval.npz (the test split; `split="val"`: OUT/data/val.npz, the validation split): x float32
    preprocessed in the model's layout (several inputs: `x.<input name>` each), y int64 labels (of the metric's
    output); several outputs add `outputs` (their names, model order) and `output` (the one y labels). Written
    (and later read, targets.runner.EvalSet) a batch at a time: an uncompressed .npz, as np.savez writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x_split, y_split = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
    y = np.asarray(y_split)
    arrays: dict[str, Any] = {"y": y.astype(np.int64) if y.dtype.kind in "biu" else y}
    if isinstance(x_split, dict):
        arrays.update({f"x.{k}": v for k, v in x_split.items()})
    else:
        arrays["x"] = x_split
    if len(outputs) > 1:
        arrays["outputs"], arrays["output"] = np.asarray(outputs), np.asarray(output)
    write_npz(path, arrays)

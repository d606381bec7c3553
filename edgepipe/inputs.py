"""What `edgepipe.build` is handed, made into what the pipeline reads: an in-memory Keras model becomes a
.keras file; arrays become an .npz (x_train, y_train, x_test, y_test); memory-mapped .npy arrays
(np.load(..., mmap_mode="r")) and `tf.data.Dataset`s become a data folder (the .npy files linked, the datasets
written a batch at a time as .npy shards), which the pipeline reads a batch at a time; and a config
(a TOML path, a dict of the TOML's sections, or a `pipeline.config.Config`) becomes a validated `Config`
pointing at them. The files go to a temporary folder the caller owns."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from edgepipe.errors import InputError
from pipeline.config import Config, config_from_dict

ModelLike = Any  # a path (str | Path) or a keras.Model
DataLike = Any  # a path, a mapping of arrays, or (train, test) / (train, val, test) tf.data.Datasets
ConfigLike = Any  # None, a path, a dict or a pipeline.config.Config
SPLITS = ("train", "test")
SPLITS_WITH_VAL = ("train", "val", "test")  # a third dataset: the validation split every choice is judged on


def model_path(model: ModelLike, tmp: Path) -> tuple[Path, str]:
    """The model as a file the pipeline loads, and a name for the run."""
    if isinstance(model, (str, Path)):
        path = Path(model).expanduser().resolve()
        if not path.exists():
            raise InputError(f"{path}: model not found")
        return path, path.stem
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(f"model: expected a path or a keras.Model, got {type(model).__name__}")
    path = tmp / "model.keras"
    model.save(path)
    return path, model.name


def data_path(data: DataLike, tmp: Path) -> Path:
    """The data as an .npz file or a data folder (a path, to either, is used as it is)."""
    if isinstance(data, (str, Path)):
        path = Path(data).expanduser().resolve()
        if not path.exists():
            raise InputError(f"{path}: data file not found")
        return path
    if isinstance(data, Mapping):
        arrays = {str(k): _array(k, v) for k, v in data.items()}
        if any(_npy_file(a) for a in arrays.values()):
            return _linked_folder(arrays, tmp / "data")
    elif isinstance(data, Sequence) and len(data) in (2, 3) and all(_is_dataset(d) for d in data):
        folder = tmp / "data"
        folder.mkdir()
        for split, ds in zip(SPLITS if len(data) == 2 else SPLITS_WITH_VAL, data, strict=True):
            _stream_to_shards(ds, split, folder)
        return folder
    else:
        raise InputError("data: expected an .npz path, a mapping of arrays (x_train, y_train, x_test, y_test; "
                         "optionally x_val, y_val), or (train, test) or (train, val, test) tf.data.Datasets, got "
                         f"{type(data).__name__}")
    path = tmp / "data.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types its first keyword only
    return path


def _array(key: object, value: Any) -> np.ndarray:
    if isinstance(value, np.memmap):  # kept as it is: linked, not read (np.asarray would drop the file)
        return value
    try:
        arr = np.asarray(value)
    except Exception as err:
        raise InputError(f"data[{key!r}]: not an array ({type(err).__name__})") from None
    if arr.dtype == object:
        raise InputError(f"data[{key!r}]: not a numeric array")
    return arr


def _is_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("tensorflow") and hasattr(obj, "element_spec")


def _npy_file(a: np.ndarray) -> Path | None:
    """The .npy file a memory-mapped array is the whole of (np.load(path, mmap_mode=...)), else None."""
    if not isinstance(a, np.memmap) or a.filename is None or not str(a.filename).endswith(".npy"):
        return None
    path = Path(a.filename)
    try:
        whole = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    same = whole.shape == a.shape and whole.dtype == a.dtype and whole.offset == a.offset
    return path if same and a.flags.c_contiguous else None


def _linked_folder(arrays: dict[str, np.ndarray], folder: Path) -> Path:
    """A data folder: memory-mapped .npy arrays linked (never read here), the others saved."""
    folder.mkdir()
    for key, a in arrays.items():
        source = _npy_file(a)
        if source is not None:
            (folder / f"{key}.npy").symlink_to(source)
        else:
            np.save(folder / f"{key}.npy", a)
    return folder


def _stream_to_shards(ds: Any, split: str, folder: Path, shard_bytes: int = 64 << 20) -> None:
    """A dataset of (x, y) elements, batched or not, written batch by batch: x as .npy shards of about
    `shard_bytes` in folder/x_<split>/, y (small) as folder/y_<split>.npy."""
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise InputError(f"data: the {split} dataset must yield (x, y) pairs")
    batched = len(spec[0].shape) > 0 and spec[0].shape[0] is None
    shards = folder / f"x_{split}"
    shards.mkdir()
    pending: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    written = [0, 0]  # shards, bytes pending

    def flush() -> None:
        if pending:
            np.save(shards / f"{written[0]:06d}.npy", np.concatenate(pending))
            pending.clear()
            written[:] = [written[0] + 1, 0]

    for x, y in ds.as_numpy_iterator():
        pending.append(np.asarray(x) if batched else np.asarray(x)[None])
        ys.append(np.asarray(y) if batched else np.asarray(y)[None])
        written[1] += pending[-1].nbytes
        if written[1] >= shard_bytes:
            flush()
    flush()
    if not ys:
        raise InputError(f"data: the {split} dataset is empty")
    np.save(folder / f"y_{split}.npy", np.concatenate(ys))


def _config_dict(config: ConfigLike) -> tuple[dict[str, Any], str | None, Path]:
    """The config's sections as a dict, its name (None: not named) and the folder its paths are relative to."""
    if config is None:
        return {}, None, Path.cwd()
    if isinstance(config, Config):
        dumped = config.model_dump(mode="json", exclude={"name", "base_dir"}, exclude_none=True)
        return dumped, config.name, config.base_dir
    if isinstance(config, Mapping):
        return dict(config), None, Path.cwd()
    if isinstance(config, (str, Path)):
        path = Path(config).expanduser()
        try:
            return tomllib.loads(path.read_text(encoding="utf-8")), path.stem, path.parent.resolve()
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise InputError(f"{path}: cannot read the config ({' '.join(str(err).split())})") from None
    raise InputError(f"config: expected a TOML path, a dict or a Config, got {type(config).__name__}")


DEFAULT_BUDGET = {"max_accuracy_drop": 0.01}  # what the built-in examples (the demo) judge by


def make_config(config: ConfigLike, model: Path, model_name: str, data: Path) -> Config:
    """The validated config of an API build: the caller's sections, with [model] and [data] pointing at the
    given model and data (the data's scale, mean and std are kept; absent, the data is used as it is). With no
    config at all: every installed target, the demo's budget."""
    sections, name, base = _config_dict(config)
    if config is None:
        from pipeline.init_config import installed_backends

        sections = {"budget": dict(DEFAULT_BUDGET), "targets": {t: {} for t in installed_backends()}}
    kept = {k: v for k, v in dict(sections.get("data") or {}).items() if k in ("scale", "mean", "std")}
    sections = {**sections, "model": {"path": str(model)}, "data": {**kept, "path": str(data)}}
    run_name = re.sub(r"[^A-Za-z0-9._-]+", "-", name or model_name).strip(".-") or "build"
    return config_from_dict(sections, name=run_name, base_dir=base, source=f"config {run_name}")

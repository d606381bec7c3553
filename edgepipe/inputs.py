"""What `edgepipe.build` is handed, made into what the pipeline reads: an in-memory Keras model becomes a
.keras file, arrays or `tf.data.Dataset`s become an .npz (x_train, y_train, x_test, y_test), and a config
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
DataLike = Any  # a path, a mapping of arrays, or a (train, test) pair of tf.data.Datasets
ConfigLike = Any  # None, a path, a dict or a pipeline.config.Config
SPLITS = ("train", "test")


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
    """The data as an .npz file (a path is used as it is)."""
    if isinstance(data, (str, Path)):
        path = Path(data).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"{path}: data file not found")
        return path
    if isinstance(data, Mapping):
        arrays = {str(k): _array(k, v) for k, v in data.items()}
    elif isinstance(data, Sequence) and len(data) == 2 and all(_is_dataset(d) for d in data):
        arrays = {}
        for split, ds in zip(SPLITS, data, strict=True):
            arrays[f"x_{split}"], arrays[f"y_{split}"] = _materialize(ds, split)
    else:
        raise InputError("data: expected an .npz path, a mapping of arrays (x_train, y_train, x_test, y_test) "
                         f"or a (train, test) pair of tf.data.Datasets, got {type(data).__name__}")
    path = tmp / "data.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types its first keyword only
    return path


def _array(key: object, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as err:
        raise InputError(f"data[{key!r}]: not an array ({type(err).__name__})") from None
    if arr.dtype == object:
        raise InputError(f"data[{key!r}]: not a numeric array")
    return arr


def _is_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("tensorflow") and hasattr(obj, "element_spec")


def _materialize(ds: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A dataset of (x, y) elements, batched or not, read batch by batch into two arrays."""
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise InputError(f"data: the {split} dataset must yield (x, y) pairs")
    batched = len(spec[0].shape) > 0 and spec[0].shape[0] is None
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for x, y in ds.as_numpy_iterator():
        xs.append(np.asarray(x) if batched else np.asarray(x)[None])
        ys.append(np.asarray(y) if batched else np.asarray(y)[None])
    if not xs:
        raise InputError(f"data: the {split} dataset is empty")
    return np.concatenate(xs), np.concatenate(ys)


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


def make_config(config: ConfigLike, model: Path, model_name: str, data: Path) -> Config:
    """The validated config of an API build: the caller's sections, with [model] and [data] pointing at the
    given model and data (the data's scale, mean and std are kept; absent, the data is used as it is)."""
    sections, name, base = _config_dict(config)
    kept = {k: v for k, v in dict(sections.get("data") or {}).items() if k in ("scale", "mean", "std")}
    sections = {**sections, "model": {"path": str(model)}, "data": {**kept, "path": str(data)}}
    run_name = re.sub(r"[^A-Za-z0-9._-]+", "-", name or model_name).strip(".-") or "build"
    return config_from_dict(sections, name=run_name, base_dir=base, source=f"config {run_name}")

"""Adapt .h5 files written by Keras 2 / tf.keras 2.x so Keras 3 loads them.

Keras 3 refuses two things such files have in quantity: a Sequential whose first layer carries
`batch_input_shape` instead of an InputLayer, and layer config keys it no longer accepts (BatchNorm's
`fused`/`renorm*`, DepthwiseConv2D's `groups`, ...). We rewrite the stored config in a copy of the file
and let Keras' own legacy loader read the weights."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import h5py

# keyword arguments every Keras 3 layer takes through **kwargs
_BASE_KWARGS = {"name", "trainable", "dtype", "autocast", "input_shape", "batch_size", "input_dim", "weights"}


def _accepted_keys(class_name: str) -> set[str] | None:
    import keras

    cls = getattr(keras.layers, class_name, None)
    if cls is None or not inspect.isclass(cls):
        return None
    keys: set[str] = set(_BASE_KWARGS)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        keys |= {p for p in inspect.signature(init).parameters if p not in ("self", "args", "kwargs")}
    return keys


def _fix_layer(layer: dict[str, Any], dropped: list[str]) -> None:
    cfg = layer.get("config", {})
    if "layers" in cfg:  # nested model
        fix_model_config(layer, dropped)
        return
    accepted = _accepted_keys(layer.get("class_name", ""))
    if accepted is None:
        return
    for key in [k for k in cfg if k not in accepted and k != "batch_input_shape"]:
        dropped.append(f"{cfg.get('name', '?')}.{key}")
        del cfg[key]


def fix_model_config(config: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """Rewrite a Keras 2 model config in place into one Keras 3 accepts; returns it."""
    inner = config.get("config", {})
    layers = inner.get("layers", [])
    if config.get("class_name") == "Sequential" and layers:
        first = layers[0]
        shape = first.get("config", {}).pop("batch_input_shape", None)
        if first.get("class_name") != "InputLayer" and shape is not None:
            layers.insert(0, {"class_name": "InputLayer", "config": {
                "batch_shape": shape, "dtype": first["config"].get("dtype", "float32"),
                "name": f"{inner.get('name', 'sequential')}_input"}})
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            c = layer.get("config", {})
            if "batch_input_shape" in c:
                c["batch_shape"] = c.pop("batch_input_shape")
            for k in ("ragged", "sparse") if c.get("ragged") is False else ():
                c.pop(k, None)
            continue
        _fix_layer(layer, dropped)
    return config


def class_names(config: Any) -> set[str]:
    """Every class_name in a stored model config (to refuse Lambda and unknown layers in safe mode)."""
    found: set[str] = set()
    if isinstance(config, dict):
        if isinstance(config.get("class_name"), str):
            found.add(config["class_name"])
        for v in config.values():
            found |= class_names(v)
    elif isinstance(config, list):
        for v in config:
            found |= class_names(v)
    return found


def read_config(path: Path) -> dict[str, Any] | None:
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        return None
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def adapted_copy(path: Path, dest: Path) -> list[str]:
    """Copy `path` to `dest` with its model config rewritten for Keras 3; returns the dropped keys."""
    config = read_config(path)
    if config is None:
        raise ValueError("the file holds weights only, no model config")
    dropped: list[str] = []
    fix_model_config(config, dropped)
    shutil.copyfile(path, dest)
    with h5py.File(dest, "r+") as f:
        f.attrs["model_config"] = json.dumps(config)
    return dropped

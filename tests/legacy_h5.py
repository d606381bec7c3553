"""Writes .h5 files the way tf.keras 2.x did (model_config JSON + model_weights groups), for tests."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np


def _conv(name: str, filters: int, activation: str, *, input_shape: list | None = None) -> dict:
    cfg = {
        "name": name, "trainable": True, "dtype": "float32", "filters": filters, "kernel_size": [3, 3],
        "strides": [1, 1], "padding": "same", "data_format": "channels_last", "dilation_rate": [1, 1],
        "groups": 1, "activation": activation, "use_bias": True,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}},
        "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
        "kernel_constraint": None, "bias_constraint": None,
    }
    if input_shape is not None:
        cfg["batch_input_shape"] = [None, *input_shape]
    return {"class_name": "Conv2D", "config": cfg}


def _bn(name: str, axis: int = 3) -> dict:
    return {"class_name": "BatchNormalization", "config": {
        "name": name, "trainable": True, "dtype": "float32", "axis": [axis], "momentum": 0.99, "epsilon": 0.001,
        "center": True, "scale": True,
        "beta_initializer": {"class_name": "Zeros", "config": {}},
        "gamma_initializer": {"class_name": "Ones", "config": {}},
        "moving_mean_initializer": {"class_name": "Zeros", "config": {}},
        "moving_variance_initializer": {"class_name": "Ones", "config": {}},
        "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None, "gamma_constraint": None,
        # keys tf.keras 2 wrote that Keras 3 no longer accepts
        "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99, "fused": None,
        "virtual_batch_size": None, "adjustment": None,
    }}


def _dense(name: str, units: int, activation: str, *, input_shape: list | None = None) -> dict:
    cfg = {"class_name": "Dense", "config": {
        "name": name, "trainable": True, "dtype": "float32", "units": units, "activation": activation,
        "use_bias": True, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
        "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
    }}
    if input_shape is not None:
        cfg["config"]["batch_input_shape"] = [None, *input_shape]
    return cfg


def write_keras2_h5(path: Path, keras_model, input_shape: tuple[int, ...]) -> None:
    """Save `keras_model` (Conv2D or Dense first, BatchNormalization, Activation, GlobalAveragePooling2D, Dense;
    Sequential)
    as tf.keras 2.x would: a Sequential config with no InputLayer (batch_input_shape on the first layer),
    legacy-only layer keys, and weights under model_weights/<layer>/<layer>/<weight>:0."""
    layers, weights = [], []
    first = True
    for layer in keras_model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            layers.append(_conv(layer.name, layer.filters, layer.activation.__name__,
                                input_shape=list(input_shape) if first else None))
            names = ["kernel", "bias"]
        elif kind == "BatchNormalization":
            layers.append(_bn(layer.name, axis=len(input_shape)))  # the channel axis of a Sequential of one rank
            names = ["gamma", "beta", "moving_mean", "moving_variance"]
        elif kind == "GlobalAveragePooling2D":
            layers.append({"class_name": "GlobalAveragePooling2D", "config": {
                "name": layer.name, "trainable": True, "dtype": "float32", "data_format": "channels_last",
                "keepdims": False}})
            names = []
        elif kind == "Activation":
            layers.append({"class_name": "Activation", "config": {
                "name": layer.name, "trainable": True, "dtype": "float32",
                "activation": layer.activation.__name__}})
            names = []
        elif kind == "Dense":
            layers.append(_dense(layer.name, layer.units, layer.activation.__name__,
                                 input_shape=list(input_shape) if first else None))
            names = ["kernel", "bias"]
        else:
            raise ValueError(f"write_keras2_h5 does not handle {kind}")
        first = False
        weights.append((layer.name, names, [np.asarray(w) for w in layer.get_weights()]))
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.12.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [n.encode() for n, _, _ in weights]
        g.attrs["backend"] = "tensorflow"
        g.attrs["keras_version"] = "2.12.0"
        for lname, wnames, values in weights:
            lg = g.create_group(lname)
            full = [f"{lname}/{w}:0".encode() for w in wnames]
            lg.attrs["weight_names"] = full
            for n, v in zip(full, values, strict=True):
                lg.create_dataset(n.decode(), data=v)

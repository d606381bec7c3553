"""Recurrent layers for int8 export: rebuilt with `unroll=True` for the model's fixed sequence length.

A Keras 3 LSTM converts to a TFLite WHILE loop whose full-integer calibration crashes the converter, and
ONNX Runtime leaves an ONNX LSTM node in float. Unrolled, the same weights become plain matmuls and
elementwise ops that every backend quantizes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

RNN_CLASSES = ("LSTM", "GRU", "SimpleRNN")


def _needs_unroll(config: Any) -> bool:
    if isinstance(config, dict):
        if config.get("class_name") in RNN_CLASSES and not config.get("config", {}).get("unroll", False):
            return True
        return any(_needs_unroll(v) for v in config.values())
    if isinstance(config, list):
        return any(_needs_unroll(v) for v in config)
    return False


def _set_unroll(config: Any) -> None:
    if isinstance(config, dict):
        if config.get("class_name") in RNN_CLASSES:
            config.setdefault("config", {})["unroll"] = True
        for v in config.values():
            _set_unroll(v)
    elif isinstance(config, list):
        for v in config:
            _set_unroll(v)


def unrolled(model: keras.Model) -> tuple[keras.Model, bool]:
    """The same model with every LSTM/GRU/SimpleRNN unrolled (weights copied); (model, changed)."""
    import keras

    serialized = keras.saving.serialize_keras_object(model)
    if not _needs_unroll(serialized):
        return model, False
    if any(d is None for d in model.inputs[0].shape[1:]):
        raise ValueError("recurrent models need a fixed sequence length to be unrolled for int8 export")
    _set_unroll(serialized)
    clone = keras.saving.deserialize_keras_object(serialized)
    clone.set_weights(model.get_weights())
    return clone, True

"""Keras models whose inputs or outputs are a dict (`keras.Model(image, {"digit": ..., "ink": ...})`).

Their names are the dict's keys, in Keras' flat order: the order of model.inputs / model.outputs (keys sorted),
which is also the order in which the exported SavedModel signature, and every artifact converted from it
(.tflite, OpenVINO IR, Keras' ONNX export), lists them, each named by its key. A dict with one key is rebuilt as
a plain one-input (one-output) model, so that it goes everywhere a single-input, single-output model goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import ModelLoadError

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Plain:
    """A model as edgepipe takes it, and the names a dict gave its inputs and outputs (None: not a dict)."""

    model: keras.Model
    input_names: tuple[str, ...] | None
    output_names: tuple[str, ...] | None
    notes: tuple[str, ...] = ()


def _struct(model: keras.Model, attr: str) -> Any:
    try:
        return getattr(model, attr)  # Functional: the structure the model was built with
    except Exception:  # e.g. a Sequential model that was never built
        return None


def dict_names(struct: Any, kind: str, path: Path) -> tuple[str, ...] | None:
    """The keys of a dict of inputs (outputs) in Keras' flat order; None when `struct` is no dict."""
    import keras

    if not isinstance(struct, dict):
        return None
    flat = keras.tree.flatten_with_path(struct)
    if any(len(p) != 1 for p, _ in flat):
        raise ModelLoadError(f"{path}: the model's {kind}s are a nested structure; edgepipe takes a list or one "
                             f"flat dict of {kind}s ({{name: tensor}})")
    return tuple(str(p[0]) for p, _ in flat)


def _check_input_keys(model: keras.Model, keys: tuple[str, ...], path: Path) -> None:
    """A dict key must be its Input's name: the exported signature names the input by the tensor, Keras'
    predict by the key (Keras warns about this too)."""
    for key, tensor in zip(keys, model.inputs, strict=True):
        name = str(tensor.name).split(":")[0]
        if key != name:
            raise ModelLoadError(f"{path}: the input dict's key {key!r} maps to an Input named {name!r}; the "
                                 f"exported model would name that input {name!r}: build it with "
                                 f"keras.Input(..., name={key!r})")


def plain(model: keras.Model, path: Path) -> Plain:
    """`model` with a one-key dict of inputs or outputs rebuilt as a plain input or output (same layers and
    weights), and the dicts' keys as the input and output names."""
    import keras

    ins, outs = _struct(model, "input"), _struct(model, "output")
    in_keys, out_keys = dict_names(ins, "input", path), dict_names(outs, "output", path)
    if in_keys is not None:
        _check_input_keys(model, in_keys, path)
    single = [(kind, keys[0]) for kind, keys in (("input", in_keys), ("output", out_keys))
              if keys is not None and len(keys) == 1]
    if not single:
        return Plain(model, in_keys, out_keys)
    rebuilt = keras.Model(model.inputs[0] if in_keys is not None and len(in_keys) == 1 else ins,
                          model.outputs[0] if out_keys is not None and len(out_keys) == 1 else outs, name=model.name)
    shown = " and ".join(f"{kind} {key!r}" for kind, key in single)
    note = f"the model's {shown} is a dict of one: built as a plain {' and '.join(k for k, _ in single)}"
    return Plain(rebuilt, in_keys, out_keys, (note,))


def flat_outputs(pred: Any) -> list[np.ndarray]:
    """A Keras model's predictions as a list in the model's output order: a list or tuple as it is, a dict by
    Keras' flat order (its keys sorted: model.outputs, LoadedModel.output_names), one array as a list of one."""
    import keras

    return [np.asarray(p) for p in keras.tree.flatten(pred)]

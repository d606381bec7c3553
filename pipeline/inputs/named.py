"""Models with several inputs or outputs: npz keys `x_train.<input name>` / `y_train.<output name>` (and `_test`),
checked against the model and preprocessed. One input stays a plain array, several become {name: array} in the
model's input order; y holds the labels of the output the metric reads (`[metric] output`, default the first);
other outputs' labels may be absent (they are checked against the float model, not labels)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.compress.base import TrainData
from pipeline.errors import DataError
from pipeline.inputs.data import Preprocess, RawData, check_targets, check_x, split_pairs
from pipeline.inputs.models import LoadedModel
from pipeline.measure.metric import Labels


def _by_name(key: str, value: Any, names: tuple[str, ...], kind: str) -> dict[str, np.ndarray]:
    """A split's arrays by the model's input (output) names; a plain array only for a single one."""
    if not isinstance(value, dict):
        if len(names) == 1:
            return {names[0]: value}
        keys = ", ".join(f"{key}.{n}" for n in names)
        raise DataError(f"{key}: the model has {len(names)} {kind}s ({', '.join(names)}): name them {keys}")
    unknown = [k for k in value if k not in names]
    if unknown:
        raise DataError(f"{key}.{unknown[0]}: the model has no {kind} {unknown[0]!r} ({kind}s: {', '.join(names)})")
    return value


def output_labels(raw_y: Any, output: str) -> np.ndarray | None:
    """The labels of `output` in a split as read (None when that output has none)."""
    if isinstance(raw_y, dict):
        return raw_y.get(output)
    return np.asarray(raw_y)


def prepare_named(raw: RawData, pre: Preprocess, model: LoadedModel, output: str,
                  labels: Labels = Labels.CLASSES) -> TrainData:
    """Validate every input and the metric's output labels against `model` (judged on `output`: see
    LoadedModel.for_output), then preprocess; preprocessing applies to every input."""
    if not model.input_names:
        raise DataError("named npz keys (x_train.<input>, y_train.<output>) need a .keras or .h5 model")
    splits: dict[str, Any] = {}
    for xk, yk in split_pairs(raw):
        xs = _by_name(xk, getattr(raw, xk), model.input_names, "input")
        missing = [n for n in model.input_names if n not in xs]
        if missing:
            raise DataError(f"{xk}.{missing[0]}: missing (the model's inputs: {', '.join(model.input_names)})")
        ys = _by_name(yk, getattr(raw, yk), model.output_names, "output")
        if output not in ys:
            raise DataError(f"{yk}.{output}: missing: the labels of the output the metric reads ([metric] output)")
        x = {n: check_x(f"{xk}.{n}", xs[n], shape, pre)
             for n, shape in zip(model.input_names, model.input_shapes, strict=True)}
        y_key = f"{yk}.{output}" if model.several_outputs else yk
        y = np.asarray(ys[output])
        if y.ndim == 0:
            raise DataError(f"{y_key}: a single value, not an array of samples")
        for n, v in x.items():
            if v.shape[0] != y.shape[0]:
                raise DataError(f"{xk}.{n} has {v.shape[0]} samples but {y_key} has {y.shape[0]}")
        splits[xk] = x if model.several_inputs else x[model.input_names[0]]
        splits[yk] = check_targets(y_key, y, labels, model.output_shape, model.num_classes)
    return TrainData(num_classes=model.num_classes, **splits)

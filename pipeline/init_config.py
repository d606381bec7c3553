"""`edgepipe init MODEL [--data PATH] [-o CONFIG]`: look at a model (inputs, outputs, classifier or not,
recurrent layers, dynamic shapes) and its data, see which backends are installed, and write a commented
starter config that `edgepipe build` accepts. An existing file is never overwritten."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UsageError
from pipeline.measure.metric import is_classifier

# the modules each target's runtime and converter need (any one of a tuple's alternatives will do)
BACKENDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "tflite": (("ai_edge_litert", "tflite_runtime"), ("tensorflow",)),
    "openvino": (("openvino",), ("nncf",)),
    "tensorrt": (("onnxruntime",), ("tf2onnx",), ("onnx",)),
}
EXTRAS = {"tflite": "tflite", "openvino": "openvino", "tensorrt": "tensorrt"}


@dataclass(frozen=True)
class ModelFacts:
    """What init needs to know about the model."""

    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    classifier: bool
    recurrent: tuple[str, ...]  # "LSTM lstm_1", ...
    format: str


@dataclass(frozen=True)
class DataFacts:
    x_max: float
    binary_labels: bool  # y_test holds only 0 and 1
    class_labels: bool  # y_train holds integer class ids


def installed_backends() -> list[str]:
    """The targets whose runtime and converter can be imported here."""
    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    return [t for t, needs in BACKENDS.items() if all(any(found(m) for m in alt) for alt in needs)]


def _recurrent_layers(model: Any) -> tuple[str, ...]:
    from pipeline.quantize.unroll import RNN_CLASSES

    found: list[str] = []
    for layer in getattr(model, "layers", []):
        kind = type(layer).__name__
        if kind in RNN_CLASSES:
            found.append(f"{kind} {layer.name}")
        elif kind == "Bidirectional" and type(layer.forward_layer).__name__ in RNN_CLASSES:
            found.append(f"Bidirectional {layer.name}")
        elif hasattr(layer, "layers"):  # a nested model
            found.extend(_recurrent_layers(layer))
    return tuple(found)


def inspect_model(path: Path, allow_unsafe: bool = False) -> ModelFacts:
    from pipeline.inputs.models import load_model

    loaded = load_model(path, allow_unsafe=allow_unsafe)
    recurrent = _recurrent_layers(loaded.keras_model) if loaded.keras_model is not None else ()
    return ModelFacts(tuple(loaded.input_shape), tuple(loaded.output_shape),
                      is_classifier(loaded.input_shape, loaded.output_shape), recurrent, loaded.format.value)


def inspect_data(path: Path) -> DataFacts:
    from pipeline.inputs.arrays import max_value
    from pipeline.inputs.data import read_data

    raw = read_data(path)
    y_tr, y_te = np.asarray(raw.y_train), np.asarray(raw.y_test)
    class_ids = y_tr.size > 0 and y_tr.dtype.kind in "biuf" and bool(np.all(np.mod(y_tr.astype(np.float64), 1) == 0))
    return DataFacts(max_value(raw.x_train) if len(raw.x_train) else 1.0,
                     y_te.size > 0 and bool(np.all(np.isin(y_te, (0, 1)))), class_ids and y_tr.ndim == 1)


def scale_guess(x_max: float) -> float:
    """x / scale brings the data to 0..1: 1 for data already there, else its max (255 for 8-bit images)."""
    if x_max <= 1.0 + 1e-6:
        return 1.0
    return 255.0 if 128 < x_max <= 255 else float(np.ceil(x_max))


def _shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _rel(path: Path, config_dir: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), config_dir.resolve())).as_posix()
    except ValueError:  # another drive
        return path.resolve().as_posix()


def _metric_lines(m: ModelFacts, d: DataFacts | None) -> list[str]:
    if m.classifier and (d is None or d.class_labels):
        return ["# [metric] is not needed: a classifier is judged by top-1 accuracy (or name = \"top_k\", k = 5)",
                "", "[budget]", "max_accuracy_drop = 0.01     # absolute, int8 vs the model"]
    if m.output_shape == m.input_shape and d is not None and d.binary_labels:
        return ["[metric]                     # output of the input's shape, 0/1 labels: an anomaly detector",
                'name = "reconstruction_auc"  # ROC AUC of the reconstruction error against y (1 = anomalous)',
                "", "[budget]", "max_metric_drop = 0.01       # AUC points, int8 vs the model"]
    why = "not a classifier" if not m.classifier else "labels are not class ids"
    return [f"[metric]                     # {why}: judged by the mean squared error against y",
            'name = "mse"                 # or mae, rmse, sqnr (no labels needed), agreement',
            "", "[budget]", "# max_metric_drop = 0.001   # in the metric's units; set it once you know the scale"]


def _target_lines(available: list[str]) -> list[str]:
    lines = []
    for t in BACKENDS:
        if t in available:
            lines += [f"[targets.{t}]", "iterations = 100"]
        else:
            lines.append(f"# [targets.{t}]             # not installed here: pip install 'edgepipe[{EXTRAS[t]}]'")
    return lines


def _model_notes(m: ModelFacts) -> list[str]:
    notes = [f"# model: {m.format}, input {_shape(m.input_shape)}, output {_shape(m.output_shape)}, "
             f"{'a classifier' if m.classifier else 'not a classifier'}"]
    if m.recurrent:
        notes.append(f"# recurrent layers ({', '.join(m.recurrent)}): exported unrolled for the fixed sequence "
                     "length, so every backend quantizes them")
    dynamic = [i for i, dim in enumerate(m.input_shape) if dim is None]
    if dynamic:
        notes.append(f"# dynamic input axes {dynamic} (None): the artifacts are built for the shape of the data's "
                     "samples; other shapes need another build")
    return notes


def render(model: Path, data: Path | None, config_dir: Path, m: ModelFacts, d: DataFacts | None,
           available: list[str]) -> str:
    """The starter config's text."""
    lines = ["# edgepipe starter config, written by `edgepipe init`; every key is checked by `edgepipe build`.",
             *_model_notes(m), "", "[model]", f'path = "{_rel(model, config_dir)}"', "", "[data]"]
    if data is None:
        lines += ['path = "data.npz"            # TODO: an .npz with x_train, y_train, x_test, y_test',
                  "scale = 1.0                  # x / scale: set it so the model sees what it was trained on"]
    else:
        lines += [f'path = "{_rel(data, config_dir)}"  # x_train, y_train, x_test, y_test',
                  f"scale = {scale_guess(d.x_max if d else 1.0)}"
                  f"                 # x / scale (a guess from the data's max, {d.x_max if d else 1.0:g})",
                  "# mean = [0.5]  std = [0.5]   # then (x - mean) / std per channel, if the model was trained so"]
    lines += ["", "[quantize]", "calibration_samples = 300", 'calibration = "minmax"       # minmax | percentile | '
              "entropy | mse", "", *_metric_lines(m, d), "# max_latency_ms = 10.0       # median, where it verifies",
              "# max_size_kb = 1024", ""]
    if not available:
        lines.append("# no backend is installed here: pip install 'edgepipe[all]', then enable a target below")
    return "\n".join(lines + _target_lines(available)) + "\n"


def check_output(out: Path) -> None:
    """`out` must be a new file in an existing folder (UsageError); checked before anything is loaded."""
    if out.exists() or out.is_symlink():
        raise UsageError(f"{out}: exists; init never overwrites a config (choose another -o)")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: {out.parent} is not a directory")


def write_starter_config(model: Path, data: Path | None, out: Path, allow_unsafe: bool = False) -> Path:
    """Inspect and write; refuses an existing `out` (UsageError) before loading anything."""
    check_output(out)
    facts = inspect_model(model, allow_unsafe)
    data_facts = inspect_data(data) if data is not None else None
    text = render(model, data, out.parent, facts, data_facts, installed_backends())
    try:
        with out.open("x", encoding="utf-8") as f:  # "x": a file that appeared meanwhile is not replaced
            f.write(text)
    except FileExistsError:
        raise UsageError(f"{out}: exists; init never overwrites a config (choose another -o)") from None
    except OSError as err:
        raise UsageError(f"-o {out}: cannot write it ({err.strerror or err})") from None
    return out

"""Backends, registered by name and imported lazily: a device with only LiteRT can run the tflite runner."""

from __future__ import annotations

import importlib
from pathlib import Path

from .base import DeviceFamily, ExportOptions, ExportResult, FloatModel, Precision, Target, TargetName

_REGISTRY: dict[TargetName, str] = {
    TargetName.TFLITE: "targets.tflite:TFLiteTarget",
    TargetName.OPENVINO: "targets.openvino:OpenVINOTarget",
    TargetName.TENSORRT: "targets.tensorrt:TensorRTTarget",
}

# the artifact each target ships, by file suffix: the Q/DQ .onnx is the tensorrt target's
_ARTIFACT_TARGETS: dict[str, TargetName] = {
    ".tflite": TargetName.TFLITE,
    ".xml": TargetName.OPENVINO,
    ".onnx": TargetName.TENSORRT,
}


def target_names() -> list[str]:
    return [t.value for t in _REGISTRY]


def get_target(name: str | TargetName) -> Target:
    """The target registered under `name`; its runtime is imported only now."""
    key = TargetName(name)
    module, cls = _REGISTRY[key].split(":")
    return getattr(importlib.import_module(module), cls)()


def precision_problem(name: str | TargetName, precision: Precision) -> str | None:
    """None when target `name` exports `precision`; else one line: why not, and what it supports."""
    target = get_target(name)
    if precision in target.precisions:
        return None
    why = target.unsupported.get(precision)
    has = ", ".join(p.value for p in target.precisions)
    return f"{TargetName(name).value} has no {precision.value}" + (f" ({why})" if why else "") + f"; it supports {has}"


def target_of_artifact(path: Path) -> TargetName | None:
    """The target whose artifact kind `path` is (by suffix), None for a file no target writes."""
    return _ARTIFACT_TARGETS.get(path.suffix.lower())


def artifact_suffixes() -> tuple[str, ...]:
    return tuple(_ARTIFACT_TARGETS)


def artifact_files(path: Path) -> list[Path]:
    """The files that make up the artifact at `path`: an OpenVINO IR's .xml has its weights in a .bin."""
    weights = path.with_suffix(".bin")
    return [path, weights] if target_of_artifact(path) is TargetName.OPENVINO and weights.is_file() else [path]


__all__ = ["DeviceFamily", "ExportOptions", "ExportResult", "FloatModel", "Precision", "Target", "TargetName", "get_target", "precision_problem", "artifact_files", "artifact_suffixes",
           "target_names", "target_of_artifact"]

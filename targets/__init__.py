"""Backends, registered by name and imported lazily: a device with only LiteRT can run the tflite runner."""

from __future__ import annotations

import importlib

from .base import ExportOptions, ExportResult, FloatModel, Target, TargetName

_REGISTRY: dict[TargetName, str] = {
    TargetName.TFLITE: "targets.tflite:TFLiteTarget",
    TargetName.OPENVINO: "targets.openvino:OpenVINOTarget",
    TargetName.TENSORRT: "targets.tensorrt:TensorRTTarget",
}


def target_names() -> list[str]:
    return [t.value for t in _REGISTRY]


def get_target(name: str | TargetName) -> Target:
    """The target registered under `name`; its runtime is imported only now."""
    key = TargetName(name)
    module, cls = _REGISTRY[key].split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["ExportOptions", "ExportResult", "FloatModel", "Target", "TargetName", "get_target", "target_names"]

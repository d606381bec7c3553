"""The target interface: one backend's int8 export, behind a name in the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from calibration import CalibrationSet


class TargetName(str, Enum):
    TFLITE = "tflite"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class FloatModel:
    """The float model handed to a target: always a SavedModel, plus the .keras file when there is one."""

    saved_model_dir: Path
    keras_path: Path | None
    input_shape: tuple[int, ...]  # one sample, without the batch dimension


@dataclass(frozen=True)
class ExportOptions:
    calibration_method: str = "minmax"


@dataclass(frozen=True)
class ExportResult:
    """What a target wrote into its folder: paths are relative to that folder."""

    artifact: str
    float_artifact: str | None
    precision: str
    files: tuple[str, ...]
    float_layers: tuple[str, ...] = ()
    calibration: str = "minmax"
    versions: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "float_artifact": self.float_artifact,
            "precision": self.precision,
            "files": list(self.files),
            "float_layers": list(self.float_layers),
            "calibration": self.calibration,
            "versions": dict(self.versions),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportResult:
        return cls(
            artifact=d["artifact"],
            float_artifact=d.get("float_artifact"),
            precision=d["precision"],
            files=tuple(d["files"]),
            float_layers=tuple(d.get("float_layers", ())),
            calibration=d.get("calibration", "minmax"),
            versions=dict(d.get("versions", {})),
            notes=tuple(d.get("notes", ())),
        )


class Target(Protocol):
    name: TargetName
    version: str  # bump when the export changes; part of the cache key
    host_latency_note: str | None  # why host latency is not the device's, when that is so

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        """Write the int8 artifact (and its float twin) into out_dir. Runs in a child process."""
        ...

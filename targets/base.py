"""The target interface: one backend's int8 export, behind a name in the registry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from calibration import CalibrationSet
from calibration.learned import LearnedRange

if TYPE_CHECKING:
    from calibration.sensitivity import LayerProbe

    from .sensitivity import SensitivityRequest


class TargetName(str, Enum):
    TFLITE = "tflite"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


class Precision(str, Enum):
    """What an artifact computes in: int8 (8-bit weights and activations), int16x8 (16-bit activations,
    8-bit weights), fp16 (float16 weights, or an fp16 engine), float (the float model as converted)."""

    INT8 = "int8"
    INT16X8 = "int16x8"
    FP16 = "fp16"
    FLOAT = "float"


class DeviceFamily(str, Enum):
    """The kind of device a target's artifact is deployed on: its latency decides only where it was measured on
    that kind (pipeline.measure.device_kind)."""

    ARM_CPU = "ARM CPU"  # LiteRT on Raspberry Pi-class boards
    X86_CPU = "x86 CPU"  # OpenVINO on Intel CPUs
    TENSORRT = "NVIDIA GPU"  # a Jetson, through TensorRT


# The kinds of Keras kernels a backend may put on different int8 grids (pipeline.quantize.weight_quant maps each
# layer's kernels to one): conv (Conv1D/2D, SeparableConv pointwise), conv3d, depthwise (DepthwiseConv,
# SeparableConv depthwise), transposed (Conv1D/2DTranspose), dense (Dense, also in TimeDistributed), recurrent
# (LSTM/GRU/SimpleRNN cell kernels, unrolled into matmuls for export). Every target quantizes each of them
# symmetric per output channel on the axis its own layout gives that channel, unless `per_tensor_weights` says
# otherwise; tests/targets/test_weight_grids.py reads every artifact back to check it.
WEIGHT_KINDS = ("conv", "conv3d", "depthwise", "transposed", "dense", "recurrent")


class KeptPrecision(str, Enum):
    """What ExportOptions.float_layers are kept in instead of int8. CHEAPEST: per op, the higher precision the
    backend runs fastest (tflite: 16x8 for the ops whose LiteRT 16x8 kernel is about as fast as int8, float
    for the rest; the other backends: float). INT16: 16x8 wherever the backend has it (tflite; the smallest
    artifact, but LiteRT's 16x8 convolutions are reference kernels: one made MobileNetV2 7-23x slower), else float.
    FLOAT: float."""

    CHEAPEST = "cheapest"
    INT16 = "int16"
    FLOAT = "float"


class UnsupportedPrecision(ValueError):
    """A target asked for a precision it does not have (the config refuses these before any export)."""


@dataclass(frozen=True)
class FloatModel:
    """The float model handed to a target: always a SavedModel, plus the .keras file when there is one."""

    saved_model_dir: Path
    keras_path: Path | None
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    converted: Path | None = None  # an earlier export's folder for this model: its float artifact may be reused
    inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()  # several inputs: (name, one sample's shape), model order

    def zeros(self) -> Any:
        """One zero sample: an array, or {input name: array} for several inputs."""
        if self.inputs:
            return {name: np.zeros((1, *shape), np.float32) for name, shape in self.inputs}
        return np.zeros((1, *self.input_shape), np.float32)

    def reusable(self, file_name: str) -> Path | None:
        """`file_name` from the earlier export's folder, when there is one that holds it."""
        path = None if self.converted is None else self.converted / file_name
        return path if path is not None and path.is_file() else None


@dataclass(frozen=True)
class ExportOptions:
    """How to quantize; every field is part of the export's cache key."""

    calibration_method: str = "minmax"  # minmax | percentile | entropy | mse
    float_layers: tuple[str, ...] = ()  # layers kept out of int8, named in the backend's own terms
    kept_precision: KeptPrecision = KeptPrecision.CHEAPEST  # what float_layers are kept in
    equalize: bool = False  # the backend's accuracy-recovery passes, where it has them (supports_equalize)
    precision: Precision = Precision.INT8  # one of the target's `precisions`
    # quantization-aware fine-tuning's ranges: the tensors they match use them instead of the calibrated ones
    activation_ranges: tuple[LearnedRange, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportOptions:
        return cls(calibration_method=str(d.get("calibration_method", "minmax")),
                   float_layers=tuple(str(n) for n in d.get("float_layers", ())),
                   kept_precision=KeptPrecision(d.get("kept_precision", KeptPrecision.CHEAPEST.value)),
                   equalize=bool(d.get("equalize", False)),
                   precision=Precision(d.get("precision", Precision.INT8.value)),
                   activation_ranges=tuple(LearnedRange.from_dict(r) for r in d.get("activation_ranges", ())))


@dataclass(frozen=True)
class ExportResult:
    """What a target wrote into its folder: paths are relative to that folder."""

    artifact: str
    float_artifact: str | None
    precision: str
    files: tuple[str, ...]
    float_layers: tuple[str, ...] = ()  # kept in float
    int16_layers: tuple[str, ...] = ()  # kept at int16 activations x int8 weights
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
            "int16_layers": list(self.int16_layers),
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
            int16_layers=tuple(d.get("int16_layers", ())),
            calibration=d.get("calibration", "minmax"),
            versions=dict(d.get("versions", {})),
            notes=tuple(d.get("notes", ())),
        )


class Target(Protocol):
    name: TargetName
    version: str  # bump when the export changes; part of the cache key
    host_latency_note: str | None  # why host latency is not the device's, when that is so
    device_family: DeviceFamily  # what its latency must be measured on to decide anything

    supports_equalize: bool  # whether ExportOptions.equalize does anything here
    symmetric_activations: bool  # its int8 activations are symmetric (zero point 0); else asymmetric
    weight_levels: int  # quantization levels of its int8 weights (255; 127 where an overflow fix keeps 7 bits)
    weight_levels_by_kind: dict[str, int]  # WEIGHT_KINDS on another grid than weight_levels
    per_tensor_weights: frozenset[str]  # WEIGHT_KINDS whose weights share one scale per tensor
    float_weights: dict[str, str]  # WEIGHT_KINDS the int8 artifact keeps in float, and why
    precisions: tuple[Precision, ...]  # what ExportOptions.precision may be here, int8 first
    unsupported: dict[Precision, str]  # why each precision it lacks is missing (one line each)

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        """Write the artifact in opts.precision (and its float twin) into out_dir. Runs in a child process."""
        ...

    def probe(self, req: SensitivityRequest) -> LayerProbe:
        """The backend's part of the per-layer sensitivity (targets.sensitivity, the one algorithm): which
        layers, each quantized alone, its SQNR, its runtime. Runs in a child process."""
        ...


def start_export(target: Target, opts: ExportOptions, out_dir: Path) -> None:
    """Every export's start: a precision the target has (else UnsupportedPrecision, saying why not), and the
    folder it writes into."""
    if opts.precision not in target.precisions:
        raise UnsupportedPrecision(f"{target.name.value}: no {opts.precision.value} "
                                   f"({target.unsupported[opts.precision]})")
    out_dir.mkdir(parents=True, exist_ok=True)


def plain_result(opts: ExportOptions, artifact: str, float_artifact: str, files: tuple[str, ...],
                 versions: dict[str, str], notes: list[str]) -> ExportResult:
    """The result of an export whose int8 artifact keeps exactly opts.float_layers in float and whose other
    precisions are the float model converted (no calibration): `float_artifact` is its float twin (none when
    the artifact is the float model itself); `files` in order, each once."""
    int8 = opts.precision is Precision.INT8
    return ExportResult(
        artifact=artifact,
        float_artifact=None if opts.precision is Precision.FLOAT else float_artifact,
        precision=opts.precision.value,
        files=tuple(dict.fromkeys(files)),
        float_layers=tuple(opts.float_layers) if int8 else (),
        calibration=opts.calibration_method if int8 else "none",
        versions=versions,
        notes=tuple(notes),
    )


def weight_grid(target: Target, kind: str) -> tuple[int, bool] | None:
    """(levels, per_tensor) of the int8 grid `target` puts a WEIGHT_KINDS kernel on, or None when it keeps
    that kind in float."""
    if kind in target.float_weights:
        return None
    return target.weight_levels_by_kind.get(kind, target.weight_levels), kind in target.per_tensor_weights


def float_layer_variants(opts: ExportOptions, table: list[dict[str, Any]], count: int) -> list[ExportOptions]:
    """`opts` keeping the 1, 2, ... `count` most sensitive layers of a sensitivity table in float."""
    layers = [str(r["layer"]) for r in table]
    return [replace(opts, float_layers=tuple(layers[:k])) for k in range(1, min(count, len(layers)) + 1)]

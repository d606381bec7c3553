"""LiteRT (TFLite) for ARM boards: int8 .tflite from the TFLite converter's calibrator and MLIR quantizer.

The converter calibrates min-max only. The export runs it in calibrate-only mode (the float model with
each activation tensor's observed min/max), rewrites those ranges for the other calibration methods
(computed here in numpy from the float activations of the calibration set), then quantizes with the
MLIR quantizer the converter itself uses, which also keeps `float_layers` (op output tensor names, the
quantizer's `denylisted_nodes`) in float."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from calibration import CalibrationSet
from calibration.learned import LearnedRange, Signatures, match, note
from calibration.ranges import ValueCollector
from calibration.sensitivity import sqnr_db

from . import runner, tflite_quantizer
from .base import (
    DeviceFamily,
    ExportOptions,
    ExportResult,
    FloatModel,
    KeptPrecision,
    Precision,
    TargetName,
    start_export,
)
from .runner import LiteRTSession
from .sensitivity import RuntimeProbe, SensitivityRequest

FLOAT32 = 0  # TensorType.FLOAT32 in the TFLite schema
_DEBUG_PREFIX = "NumericVerify/"
_memo: dict[tuple[str, str, str], bytes] = {}  # (saved model, calibration fingerprint, method) -> calibrated


def _representative(calib: CalibrationSet) -> Callable[[], Iterator[Any]]:
    def gen() -> Iterator[Any]:  # several inputs: {signature input name: array}
        for batch in calib.batches(1):
            yield {k: v.astype(np.float32) for k, v in batch.items()} if isinstance(batch, dict) \
                else [batch.astype(np.float32)]

    return gen


def _stats_tensors(content: bytes) -> tuple[Any, list[int]]:
    """The calibrated model as an object, and the float tensors of its main graph that carry min/max."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    tensors = obj.subgraphs[0].tensors
    idx = [i for i, t in enumerate(tensors) if t.type == FLOAT32 and t.quantization is not None
           and t.quantization.min is not None and len(t.quantization.min) == 1]
    return obj, idx


def _collect(calibrated: bytes, calib: CalibrationSet, idx: list[int], collector: Any) -> None:
    """collector.add(str(tensor index), value) for each of `idx` as the calibrated (float) model runs calib."""
    session = LiteRTSession(calibrated, 1, preserve=True)
    for batch in calib.batches(1):
        session.run(batch)
        for i in idx:
            collector.add(str(i), session.interp.get_tensor(i))


def _override_ranges(calibrated: bytes, calib: CalibrationSet, method: str) -> bytes:
    """Replace the calibrator's min/max of every activation tensor with the `method` range, estimated from
    the values the tensor takes when the float model runs the calibration set."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj, idx = _stats_tensors(calibrated)
    values = ValueCollector(per_batch=max(1024, (1 << 18) // max(1, len(calib))))
    _collect(calibrated, calib, idx, values)
    for key, (lo, hi) in values.ranges(method).items():
        q = obj.subgraphs[0].tensors[int(key)].quantization
        q.min, q.max = np.array([lo], np.float32), np.array([hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def with_learned(calibrated: bytes, calib: CalibrationSet, ranges: tuple[LearnedRange, ...]) -> tuple[bytes, int]:
    """The calibrated model with the learned min/max on every tensor that matches one (calibration.learned),
    and how many did; the MLIR quantizer then derives those tensors' scale and zero point from them."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj, idx = _stats_tensors(calibrated)
    signatures = Signatures()
    _collect(calibrated, calib, idx, signatures)
    found = match(ranges, signatures.values())
    for key, r in found.items():
        q = obj.subgraphs[0].tensors[int(key)].quantization
        q.min, q.max = np.array([r.lo], np.float32), np.array([r.hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj)), len(found)


def calibrated_model(model: FloatModel, calib: CalibrationSet, method: str) -> bytes:
    """The converter's calibrate-only output (float ops, activation ranges attached), ranges by `method`."""
    key = (str(model.saved_model_dir), calib.fingerprint(), method)
    if key not in _memo:
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_saved_model(str(model.saved_model_dir))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(calib)
        conv._experimental_calibrate_only = True  # the QuantizationDebugger's documented route
        content = conv.convert()
        _memo[key] = content if method == "minmax" else _override_ranges(content, calib, method)
    return _memo[key]


def quantize(calibrated: bytes, float_layers: tuple[str, ...] | list[str] = ()) -> bytes:
    """int8 in and out; every op int8 except those whose output tensor is named in `float_layers`."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    return bytes(convert.mlir_quantize(calibrated, input_data_type=tf.int8, output_data_type=tf.int8,
                                       denylisted_nodes=list(float_layers) or None))


def layer_names(calibrated: bytes) -> list[str]:
    """Each op of the main graph, by its first output tensor's name (what denylisted_nodes takes)."""
    from tensorflow.lite.tools import flatbuffer_utils

    sg = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated)).subgraphs[0]
    return [sg.tensors[op.outputs[0]].name.decode() for op in sg.operators if len(op.outputs)]


def _debugger_sqnr(calibrated: bytes, calib: CalibrationSet) -> dict[str, float]:
    """tf.lite.experimental.QuantizationDebugger: each quantized op against the same op in float on the same
    (dequantized) input; SQNR per sample, averaged. Keyed by the op's output tensor name."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    def sqnr(f: np.ndarray, q: np.ndarray, scale: float, zero: int) -> float:
        return sqnr_db(f, (q.astype(np.float32) - zero) * scale)

    debug_model = convert.mlir_quantize(calibrated, enable_numeric_verify=True)
    options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"sqnr": sqnr})
    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=debug_model, debug_dataset=_representative(calib), debug_options=options)
    debugger.run()
    return {name.removeprefix(_DEBUG_PREFIX).rsplit(":", 1)[0]: float(stats["sqnr"])
            for name, stats in (debugger.layer_statistics or {}).items()}


def _lookup(stats: dict[str, float], layer: str) -> float | None:
    """The debugger names a layer by its quantized tensor, which may carry a suffix: longest prefix wins."""
    hits = [k for k in stats if k == layer or k.startswith(layer)]
    return stats[min(hits, key=len)] if hits else None


def _method_note(method: str) -> str:
    if method == "minmax":
        return "calibration minmax: the TFLite converter's own min-max calibration"
    return (f"calibration {method}: the TFLite converter calibrates min-max only; edgepipe recomputed every "
            f"activation tensor's range with {method} (numpy, calibration/ranges.py) from the float "
            "activations of the calibration set and wrote it into the calibrated model before the converter's "
            "MLIR quantizer ran, so values outside the range clip at run time")


ARTIFACTS = {Precision.INT8: "model_int8.tflite", Precision.INT16X8: "model_int16x8.tflite",
             Precision.FP16: "model_fp16.tflite", Precision.FLOAT: "model_float.tflite"}
NOTE_16X8 = ("int16x8: LiteRT's 16x8 mode (EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8): int16 "
             "activations (symmetric, zero point 0), int8 weights, int16 input and output")
NOTE_FP16 = ("fp16: float16 weights (target_spec.supported_types = [tf.float16]), float32 input and output; "
             "LiteRT's CPU kernels dequantize the weights to float32 when the model loads, a GPU delegate runs fp16")


def convert_16x8(model: FloatModel, calib: CalibrationSet) -> bytes:
    """The converter's 16x8 mode: its own min-max calibration, then its (non-MLIR) 16-bit quantizer."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(model.saved_model_dir))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int16
    return bytes(conv.convert())


def convert_fp16(model: FloatModel) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(model.saved_model_dir))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return bytes(conv.convert())


def _int8(model: FloatModel, calib: CalibrationSet, opts: ExportOptions,
          float_tflite: bytes) -> tuple[bytes, list[str], tflite_quantizer.Mixed | None]:
    """The converter's int8, or LiteRT Quantizer's with kept layers 16x8 by scope (tflite_quantizer.split)."""
    calibrated = calibrated_model(model, calib, opts.calibration_method)
    notes = [_method_note(opts.calibration_method)]
    if opts.activation_ranges:
        calibrated, found = with_learned(calibrated, calib, opts.activation_ranges)
        notes.append(note(found, opts.activation_ranges))
    if opts.equalize:
        notes.append("equalize: the TFLite converter has no equalization or bias correction; ignored")
    if opts.float_layers and opts.kept_precision is not KeptPrecision.FLOAT:
        mixed, kept_note = tflite_quantizer.keep_layers(float_tflite, calib, calibrated, opts.float_layers,
                                                        opts.kept_precision)
        notes.append(kept_note)
        if mixed is not None:
            return mixed.content, notes, mixed
    elif opts.float_layers:
        notes.append(f"{len(opts.float_layers)} op(s) kept in float (TFLite quantizer denylisted_nodes): "
                     "int8 input and output, float tensors inside, so not a full-integer model")
    return quantize(calibrated, opts.float_layers), notes, None


def _other(model: FloatModel, calib: CalibrationSet, opts: ExportOptions) -> tuple[bytes, list[str]]:
    """int16x8 or fp16 (float is the float twin itself)."""
    if opts.precision is Precision.FP16:
        return convert_fp16(model), [NOTE_FP16]
    notes = [NOTE_16X8]
    if opts.calibration_method != "minmax":
        notes.append(f"calibration {opts.calibration_method}: the 16x8 quantizer takes the converter's own "
                     "min-max ranges; minmax used (16-bit activations leave ample resolution inside them)")
    return convert_16x8(model, calib), notes


class TFLiteTarget:
    name = TargetName.TFLITE
    version = "4"  # 3: precisions; 4: kept layers 16x8 by scope (LiteRT Quantizer)
    host_latency_note: str | None = None
    supports_equalize = False
    device_family = DeviceFamily.ARM_CPU
    symmetric_activations = False
    weight_levels = 255
    weight_levels_by_kind: dict[str, int] = {}
    per_tensor_weights: frozenset[str] = frozenset()  # FULLY_CONNECTED included: per channel, axis 0
    float_weights = {"conv3d": "LiteRT has no int8 CONV_3D kernel: the converter keeps it in float between "
                               "DEQUANTIZE and QUANTIZE"}
    precisions: tuple[Precision, ...] = (Precision.INT8, Precision.INT16X8, Precision.FP16, Precision.FLOAT)
    unsupported: dict[Precision, str] = {}

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        import tensorflow as tf

        start_export(self, opts, out_dir)
        earlier = model.reusable("model_float.tflite")
        if earlier is not None:
            shutil.copy2(earlier, out_dir / "model_float.tflite")
        else:
            float_conv = tf.lite.TFLiteConverter.from_saved_model(str(model.saved_model_dir))
            (out_dir / "model_float.tflite").write_bytes(float_conv.convert())
        artifact, calibration = ARTIFACTS[opts.precision], opts.calibration_method
        notes: list[str] = []
        mixed = None
        if opts.precision is Precision.INT8:
            content, notes, mixed = _int8(model, calib, opts, (out_dir / "model_float.tflite").read_bytes())
            (out_dir / artifact).write_bytes(content)
        elif opts.precision is not Precision.FLOAT:
            content, notes = _other(model, calib, opts)
            (out_dir / artifact).write_bytes(content)
        if opts.precision in (Precision.FP16, Precision.FLOAT):
            calibration = "none"
        if opts.precision is Precision.INT16X8:
            calibration = "minmax"
        return ExportResult(
            artifact=artifact,
            float_artifact=None if opts.precision is Precision.FLOAT else "model_float.tflite",
            precision=opts.precision.value,
            files=tuple(dict.fromkeys((artifact, "model_float.tflite"))),
            float_layers=mixed.float_layers if mixed else tuple(opts.float_layers) if opts.precision is Precision.INT8 else (),
            int16_layers=mixed.int16_layers if mixed else (),
            calibration=calibration,
            versions={"tensorflow": tf.__version__, "ai-edge-litert": version("ai-edge-litert"),
                      **({"litert-quantizer": version("litert-quantizer")} if mixed else {})},
            notes=tuple(notes),
        )

    def probe(self, req: SensitivityRequest) -> RuntimeProbe:
        return _Probe(req)


class _Probe(RuntimeProbe):
    """LiteRT's LayerProbe: the MLIR quantizer with every other op denylisted; SQNR from the debugger."""

    def __init__(self, req: SensitivityRequest) -> None:
        super().__init__(req)
        self.calibrated = calibrated_model(req.model, req.calib, req.opts.calibration_method)
        self.stats = _debugger_sqnr(self.calibrated, self.small)
        self.names = layer_names(self.calibrated)

    def candidates(self) -> list[str]:
        return self.names

    def quantized_alone(self, layer: str) -> bytes | None:
        if _lookup(self.stats, layer) is None:  # not quantized (or not checked by the debugger)
            return None
        return quantize(self.calibrated, [n for n in self.names if n != layer])

    def sqnr(self, layer: str, model: Any) -> float | None:
        return _lookup(self.stats, layer)

    def session(self, model: Any) -> runner.Session:
        return LiteRTSession(model, 1)

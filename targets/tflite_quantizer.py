"""LiteRT Quantizer (`litert-quantizer`, formerly ai-edge-quantizer) for the tflite target.

It quantizes the float .tflite by scope: a recipe maps regexes over op output tensor names (the names
`targets.tflite.layer_names` gives, which ExportOptions.float_layers holds) to configs. Here: static int8
(int8 weights per channel, asymmetric int8 activations) for every op, and for the layers kept out of int8
int16 activations x int8 weights (16x8, symmetric int16) or its `no_quantize` algorithm (float), chosen per
op by ExportOptions.kept_precision (`split`). The quantizer inserts the int8<->int16 requantize ops.

Its own calibration is min-max; for another method the ranges come from the converter's calibrated model
(edgepipe's `calibration_method` ranges, by tensor name) and replace the quantizer's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration import CalibrationSet

from .base import KeptPrecision

FLOAT32 = 0  # TensorType.FLOAT32 in the TFLite schema
CALIBRATION_THREADS = 1
# Ops whose LiteRT 16x8 kernel costs about what float does (bench/quantizer_vs_converter.py, per-op table:
# MobileNetV2 1.0 @224, one layer kept, one thread: FULLY_CONNECTED +5% at 16x8, +7% in float; ADD and MEAN
# +50% / +35% at 16x8, ~0% in float; CONV_2D and DEPTHWISE_CONV_2D 11-18x slower at 16x8: reference kernels,
# XNNPACK has no int16). CHEAPEST keeps only these at 16x8 and the others in float.
FAST_16X8_OPS = frozenset({"FULLY_CONNECTED"})


@dataclass(frozen=True)
class Mixed:
    """A LiteRT Quantizer artifact and how each kept layer was realized."""

    content: bytes
    int16_layers: tuple[str, ...]  # 16x8: int16 activations, int8 weights
    float_layers: tuple[str, ...]  # no 16x8 kernel for the op: float


def int16_ops() -> frozenset[str]:
    """The TFLite ops the quantizer's default policy quantizes as 16x8 (static_wi8_ai16)."""
    from litert_quantizer import default_policy

    policy = json.loads(default_policy.DEFAULT_JSON_POLICY)
    return frozenset(policy["ops_per_config"]["static_wi8_ai16"])


def op_kinds(float_tflite: bytes) -> dict[str, str]:
    """Each op of the main graph: its first output tensor's name -> its TFLite op name (CONV_2D, ...)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=float_tflite)
    tensors = interp.get_tensor_details()
    return {tensors[op["outputs"][0]]["name"]: op["op_name"] for op in interp._get_ops_details()
            if len(op["outputs"])}


def _calibration_data(float_tflite: bytes, calib: CalibrationSet) -> dict[str, list[dict[str, np.ndarray]]]:
    """The calibration set as the quantizer takes it: {signature: [{input name: one sample}, ...]}; a set for
    several inputs is already keyed by the signature's input names."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=float_tflite).get_signature_list()
    key = next(iter(signatures))
    name = signatures[key]["inputs"][0]
    return {key: [{k: np.asarray(v, np.float32) for k, v in b.items()} if isinstance(b, dict)
                  else {name: np.asarray(b, np.float32)} for b in calib.batches(1)]}


def calibrated_ranges(calibrated: bytes) -> dict[str, tuple[float, float]]:
    """Tensor name -> (min, max) as the converter's calibrated model carries them (edgepipe's method ranges)."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    return {t.name.decode(): (float(t.quantization.min[0]), float(t.quantization.max[0]))
            for t in obj.subgraphs[0].tensors
            if t.type == FLOAT32 and t.quantization is not None and t.quantization.min is not None
            and len(t.quantization.min) == 1}


def _with_ranges(qsvs: dict[str, Any], ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    out = dict(qsvs)
    for name, (lo, hi) in ranges.items():
        if out.get(name) and "min" in out[name]:
            shape = np.shape(out[name]["min"])
            out[name] = {**out[name], "min": np.full(shape, lo, np.float32), "max": np.full(shape, hi, np.float32)}
    return out


def _scope(name: str) -> str:
    """The quantizer's scope of an op is its output tensor names, each followed by ';'."""
    return f"^{re.escape(name)};"


def _quantizer(float_tflite: bytes, int16: Iterable[str], floats: Iterable[str]) -> Any:
    from litert_quantizer import qtyping, quantizer, recipe

    q = quantizer.Quantizer(float_tflite, recipe.static_wi8_ai8())
    every = qtyping.TFLOperationName.ALL_SUPPORTED
    for name in int16:
        q.add_static_config(_scope(name), every, activation_num_bits=16, weight_num_bits=8)
    for name in floats:
        q.update_quantization_recipe(_scope(name), every, algorithm_key="no_quantize")
    return q


def quantize(float_tflite: bytes, calib: CalibrationSet, int16: Iterable[str] = (), floats: Iterable[str] = (),
             ranges: dict[str, tuple[float, float]] | None = None) -> bytes:
    """Static int8 by LiteRT Quantizer; the layers in `int16` as 16x8 and those in `floats` in float.
    `ranges` (tensor name -> min, max) replace the quantizer's own min-max calibration where given."""
    q = _quantizer(float_tflite, int16, floats)
    qsvs = q.calibrate(_calibration_data(float_tflite, calib), num_threads=CALIBRATION_THREADS)
    if ranges:
        qsvs = _with_ranges(qsvs, ranges)
    return bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model)


def split(float_tflite: bytes, layers: Iterable[str],
          kept: KeptPrecision = KeptPrecision.CHEAPEST) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`layers` split into those to keep at 16x8 and those to keep in float: 16x8 needs a kernel in the
    quantizer's policy, and for CHEAPEST also an op in FAST_16X8_OPS; FLOAT keeps them all in float."""
    kinds, layers = op_kinds(float_tflite), tuple(layers)
    ok = frozenset() if kept is KeptPrecision.FLOAT else int16_ops()
    if kept is KeptPrecision.CHEAPEST:
        ok = ok & FAST_16X8_OPS
    return (tuple(n for n in layers if kinds.get(n) in ok), tuple(n for n in layers if kinds.get(n) not in ok))


def quantize_mixed(float_tflite: bytes, calib: CalibrationSet, layers: Iterable[str],
                   kept: KeptPrecision = KeptPrecision.CHEAPEST,
                   ranges: dict[str, tuple[float, float]] | None = None) -> Mixed:
    """int8 everywhere except `layers`: 16x8 or float as `split` decides."""
    int16, floats = split(float_tflite, layers, kept)
    return Mixed(quantize(float_tflite, calib, int16, floats, ranges), int16, floats)


_CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")  # what the quantizer inserts between int8, int16 and float ops


def layer_types(content: bytes) -> dict[str, str]:
    """Each op of a quantized model (but the inserted conversions) by its first output tensor's name -> that
    tensor's dtype name."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content)
    tensors = interp.get_tensor_details()
    return {tensors[op["outputs"][0]]["name"]: np.dtype(tensors[op["outputs"][0]]["dtype"]).name
            for op in interp._get_ops_details() if len(op["outputs"]) and op["op_name"] not in _CONVERSIONS}


def keep_layers(float_tflite: bytes, calib: CalibrationSet, calibrated: bytes, layers: tuple[str, ...],
                kept: KeptPrecision) -> tuple[Mixed | None, str]:
    """The tflite target's int8 with `layers` kept out of int8 as `kept` says: by scope through LiteRT
    Quantizer (activation ranges from the converter's `calibrated` model) when at least one is 16x8. None
    when none is, or the quantizer fails: the converter then keeps them all in float. The note says which."""
    int16, _ = split(float_tflite, layers, kept)
    floats = (f"{len(layers)} op(s) kept in float (TFLite quantizer denylisted_nodes): int8 input and output, "
              "float tensors inside, so not a full-integer model")
    if not int16:
        return None, f"{floats}; none at 16x8 (kept_precision {kept.value}: {_why(kept)})"
    try:
        mixed = quantize_mixed(float_tflite, calib, layers, kept, calibrated_ranges(calibrated))
    except Exception as err:  # its errors are plain ValueError/RuntimeError/KeyError: keep the float route
        return None, f"{floats}; LiteRT Quantizer failed ({type(err).__name__}: {str(err)[:200]})"
    return mixed, (f"LiteRT Quantizer (litert-quantizer {_version()}) by scope: {len(mixed.int16_layers)} op(s) "
                   f"at int16 activations x int8 weights ({', '.join(mixed.int16_layers)}), "
                   f"{len(mixed.float_layers)} in float (kept_precision {kept.value}: {_why(kept)}), the rest "
                   "int8 with the converter's activation ranges; int8 input and output")


def _why(kept: KeptPrecision) -> str:
    if kept is KeptPrecision.CHEAPEST:
        return (f"16x8 only for {', '.join(sorted(FAST_16X8_OPS))}, whose LiteRT 16x8 kernel is about as fast "
                "as float; float elsewhere")
    return "16x8 wherever LiteRT Quantizer's policy has a 16x8 kernel for the op; float elsewhere"


def _version() -> str:
    from importlib.metadata import version

    return version("litert-quantizer")

"""Fake quantization in Keras 3 for quantization-aware fine-tuning (QAT), matching the targets' int8 schemes:
weights per-channel symmetric int8 on [-127, 127] (scale = max|w| / 127, what LiteRT and ONNX Runtime's
symmetric per-channel weights use; 127 levels, [-63, 63], for OpenVINO, whose NNCF overflow fix quantizes
weights to 7 bits), activations per tensor with a learned range, symmetric (zero point 0,
TensorRT) or asymmetric (LiteRT, OpenVINO). Rounding passes gradients straight through (stop_gradient);
the activation ranges learn from the rounding and the clipping error alike (fake_quant, LSQ-style)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from pipeline.compress.graph import LayerEdit, layer_config, rebuild

WEIGHT_LEVELS = 127.0  # symmetric int8 activations: [-127, 127]
INT8_LEVELS = 255  # weights
RANGE_UNIT = 10.0  # see ActQuant
AVERAGING = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
             keras.layers.GlobalAveragePooling3D, keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
             keras.layers.AveragePooling3D, keras.layers.Add)


def quantize_weights(w: Any, levels: int = INT8_LEVELS) -> Any:
    """Per-output-channel (last axis) symmetric fake quantization with a straight-through gradient: integer
    multiples of max|w| / ((levels - 1) / 2) (255: int8 on [-127, 127]; 127: NNCF's overflow fix, 7 bits on
    [-63, 63], the grid the OpenVINO IR's int8 weight constants were measured on)."""
    axes = tuple(range(len(w.shape) - 1))
    half = (levels - 1) / 2.0
    step = ops.maximum(ops.max(ops.abs(w), axis=axes, keepdims=True), 1e-12) / half
    q = ops.clip(ops.round(w / step), -np.ceil(half), np.ceil(half)) * step
    return w + ops.stop_gradient(q - w)


def snapped(w: np.ndarray, levels: int = INT8_LEVELS) -> np.ndarray:
    """The weights on their grid, as numpy (what the export writes: the backend re-quantizes them exactly)."""
    return np.asarray(keras.ops.convert_to_numpy(quantize_weights(ops.convert_to_tensor(w), levels)), np.float32)


def _round_ste(v: Any) -> Any:
    return v + ops.stop_gradient(ops.round(v) - v)


def fake_quant(x: Any, step: Any, zero: Any, qmin: float, qmax: float) -> Any:
    """x on the int8 grid of `step` and `zero` (an integer), clipped to [qmin, qmax]. Rounding is straight
    through; the step learns from both the rounding and the clipping error (LSQ, Esser et al. 2020), so a
    range can shrink as well as grow."""
    q = ops.clip(x / step + zero, qmin, qmax)
    return (_round_ste(q) - zero) * step


@keras.saving.register_keras_serializable("edgepipe")
class QConv2D(keras.layers.Conv2D):
    """Conv2D whose kernel is fake-quantized per output channel."""

    def __init__(self, *args: Any, weight_levels: int = INT8_LEVELS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weight_levels = int(weight_levels)

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        return super().convolution_op(inputs, quantize_weights(kernel, self.weight_levels))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight_levels": self.weight_levels}


@keras.saving.register_keras_serializable("edgepipe")
class QDense(keras.layers.Dense):
    """Dense whose kernel is fake-quantized per output unit."""

    def __init__(self, *args: Any, weight_levels: int = INT8_LEVELS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weight_levels = int(weight_levels)

    def call(self, inputs: Any, training: Any = None) -> Any:
        x = ops.matmul(inputs, quantize_weights(self.kernel, self.weight_levels))
        if self.use_bias:
            x = ops.add(x, self.bias)
        return self.activation(x) if self.activation is not None else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight_levels": self.weight_levels}


@keras.saving.register_keras_serializable("edgepipe")
class ActQuant(keras.layers.Layer):
    """Per-tensor int8 fake quantization of an activation with a learned [lo, hi] (symmetric: [-a, a]).
    The trained variables are lo and hi in units of RANGE_UNIT x the initial max |range|, so that an
    optimizer step moves a range by a share of its size, whatever its magnitude (a range of 500 learns
    as fast as one of 5)."""

    def __init__(self, lo: float = -1.0, hi: float = 1.0, symmetric: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.init_lo, self.init_hi, self.symmetric = float(lo), float(hi), bool(symmetric)
        self.unit = max(abs(self.init_lo), abs(self.init_hi), 1e-6) * RANGE_UNIT

    def build(self, input_shape: Any) -> None:
        lo, hi = self.init_lo / self.unit, self.init_hi / self.unit
        self.lo = self.add_weight(shape=(), initializer=keras.initializers.Constant(lo), name="lo")
        self.hi = self.add_weight(shape=(), initializer=keras.initializers.Constant(hi), name="hi")

    def range(self) -> tuple[float, float]:
        lo = float(ops.convert_to_numpy(self.lo)) * self.unit
        hi = float(ops.convert_to_numpy(self.hi)) * self.unit
        if self.symmetric:
            a = max(abs(lo), abs(hi))
            return -a, a
        return min(lo, 0.0), max(hi, 0.0)

    def call(self, x: Any) -> Any:
        lo, hi = ops.minimum(self.lo * self.unit, 0.0), ops.maximum(self.hi * self.unit, 0.0)
        if self.symmetric:
            a = ops.maximum(ops.maximum(ops.abs(lo), ops.abs(hi)), 1e-6)
            return fake_quant(x, a / WEIGHT_LEVELS, ops.zeros(()), -WEIGHT_LEVELS, WEIGHT_LEVELS)
        step = ops.maximum(hi - lo, 1e-6) / 255.0
        return fake_quant(x, step, _round_ste(-lo / step), 0.0, 255.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lo": self.init_lo, "hi": self.init_hi, "symmetric": self.symmetric}


def _activation_name(layer: keras.layers.Layer) -> str:
    fn = getattr(layer, "activation", None)
    return str(getattr(fn, "__name__", "linear")) if fn is not None else "linear"


def quantized_outputs(layer: keras.layers.Layer, final: str) -> bool:
    """Where the backends put an activation quantizer we can learn: after a non-linearity (conv/dense with a
    fused one, ReLU/Activation layers), after averaging and adding layers (a new range: int8 pooling and Add
    requantize), and the logits (`final`)."""
    if layer.name == final:
        return True
    if isinstance(layer, (keras.layers.ReLU, *AVERAGING)):
        return True
    if isinstance(layer, keras.layers.Activation | keras.layers.Conv2D | keras.layers.Dense):
        return _activation_name(layer) not in ("linear", "softmax")
    return False


def qat_model(logits: keras.Model, ranges: dict[str, tuple[float, float]], symmetric: bool,
              weight_levels: int = INT8_LEVELS) -> keras.Model:
    """A fake-quantized copy of a logits model: Q layers for Conv2D/Dense, an ActQuant after every layer that
    `ranges` names (initial range), BatchNormalization frozen (the backends fold it into the conv)."""
    def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
        cls = {keras.layers.Conv2D: QConv2D, keras.layers.Dense: QDense}.get(type(layer))
        if cls is None and layer.name not in ranges:
            return None
        config = layer_config(layer) if cls is None else layer_config(layer, weight_levels=weight_levels)
        base = LayerEdit(cls or type(layer), config, layer.get_weights())
        if layer.name not in ranges:
            return [base]
        lo, hi = ranges[layer.name]
        return [base, LayerEdit(ActQuant, {"lo": lo, "hi": hi, "symmetric": symmetric, "name": f"{layer.name}_aq"})]

    model = rebuild(logits, transform)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def learned(model: keras.Model) -> tuple[keras.Model, dict[str, tuple[float, float]]]:
    """The plain float model of a fine-tuned QAT model (weights snapped to their int8 grid, ActQuant removed)
    and the learned activation range of every layer that had one."""
    ranges = {layer.name.removesuffix("_aq"): layer.range() for layer in model.layers if isinstance(layer, ActQuant)}
    plain = {QConv2D: keras.layers.Conv2D, QDense: keras.layers.Dense}

    def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
        if isinstance(layer, ActQuant):
            return []
        if type(layer) in plain:
            w, config = layer.get_weights(), layer_config(layer)
            levels = int(config.pop("weight_levels"))
            return [LayerEdit(plain[type(layer)], config, [snapped(w[0], levels), *w[1:]])]
        return None

    return rebuild(model, transform), ranges

"""Fake quantization in Keras 3 for quantization-aware fine-tuning (QAT), matching the targets' int8 schemes:
weights symmetric on each target's own grid (pipeline.quantize.weight_quant: per output channel, 255 levels
on [-127, 127] as LiteRT and ONNX Runtime quantize them, 127 levels on [-63, 63] for OpenVINO's 7-bit
convolution and matmul weights), activations per tensor with a learned range, symmetric (zero point 0,
TensorRT) or asymmetric (LiteRT, OpenVINO) with the zero point rounded to an integer as the backends store it.
Rounding passes gradients straight through (stop_gradient); the activation ranges learn from the rounding and
the clipping error alike (fake_quant, LSQ-style)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from calibration import grid
from calibration.learned import ASYMMETRIC_STEPS, SYMMETRIC_QMAX, on_grid
from pipeline.compress.graph import LayerEdit, layer_config, outbound_layers, rebuild
from pipeline.quantize.weight_quant import Grids, Planned, attach, plan, snapped_weights

RANGE_UNIT = 10.0  # see ActQuant
AVERAGING = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
             keras.layers.GlobalAveragePooling3D, keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
             keras.layers.AveragePooling3D, keras.layers.Add)
_L = keras.layers
COMPUTING = (_L.Conv1D, _L.Conv2D, _L.Conv3D, _L.DepthwiseConv1D, _L.DepthwiseConv2D, _L.SeparableConv1D,
             _L.SeparableConv2D, _L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose, _L.Dense,
             _L.BatchNormalization, _L.LSTM, _L.GRU, _L.SimpleRNN, _L.TimeDistributed, _L.Bidirectional)
FUSED = (_L.BatchNormalization, _L.ReLU, _L.Activation)  # the backends fold these into the op before them


def _round_ste(v: Any) -> Any:
    return v + ops.stop_gradient(ops.round(v) - v)


def fake_quant(x: Any, step: Any, zero: Any, qmin: float, qmax: float) -> Any:
    """calibration.grid.fake_quant in Keras, x on the int8 grid of `step` and `zero` (an integer). Rounding is
    straight through; the step learns from both the rounding and the clipping error (LSQ, Esser et al. 2020),
    so a range can shrink as well as grow."""
    return grid.fake_quant(x, step, zero, qmin, qmax, xp=ops, rounding=_round_ste)


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
        """The trained grid's ends: [-a, a] when symmetric; else [-z step, (255 - z) step] with the zero point z
        rounded as in training (the limits the backends must be given to quantize on this very grid)."""
        lo = float(ops.convert_to_numpy(self.lo)) * self.unit
        hi = float(ops.convert_to_numpy(self.hi)) * self.unit
        if self.symmetric:
            a = max(abs(lo), abs(hi), 1e-6)
            return -a, a
        return on_grid(min(lo, 0.0), max(hi, 0.0))

    def call(self, x: Any) -> Any:
        lo, hi = ops.minimum(self.lo * self.unit, 0.0), ops.maximum(self.hi * self.unit, 0.0)
        if self.symmetric:
            a = ops.maximum(ops.maximum(ops.abs(lo), ops.abs(hi)), 1e-6)
            return fake_quant(x, a / SYMMETRIC_QMAX, ops.zeros(()), -SYMMETRIC_QMAX, SYMMETRIC_QMAX)
        step = ops.maximum(hi - lo, 1e-6) / ASYMMETRIC_STEPS
        return fake_quant(x, step, _round_ste(-lo / step), 0.0, ASYMMETRIC_STEPS)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lo": self.init_lo, "hi": self.init_hi, "symmetric": self.symmetric}


def _activation_name(layer: keras.layers.Layer) -> str:
    fn = getattr(layer, "activation", None)
    return str(getattr(fn, "__name__", "linear")) if fn is not None else "linear"


def quantized_outputs(layer: keras.layers.Layer, final: str, consumers: list[keras.layers.Layer]) -> bool:
    """Where the backends put an activation quantizer we can learn: after a non-linearity (a layer with a fused
    one, ReLU/Activation layers), after averaging and adding layers (a new range: int8 pooling and Add
    requantize), after a linear convolution, matmul or BatchNorm unless a BatchNorm or activation that the
    backends fold into it follows (a MobileNetV2 projection's output, say), and the logits (`final`)."""
    if layer.name == final:
        return True
    if isinstance(layer, (keras.layers.ReLU, *AVERAGING)):
        return True
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer) not in ("linear", "softmax")
    if isinstance(layer, COMPUTING):
        if _activation_name(layer) not in ("linear", "softmax"):
            return True
        return not (len(consumers) == 1 and isinstance(consumers[0], FUSED))
    return False


def quantized_names(logits: keras.Model) -> list[str]:
    """The layers of `logits` whose outputs get a learned range (quantized_outputs)."""
    final, consumers = logits.layers[-1].name, outbound_layers(logits)
    return [la.name for la in logits.layers if quantized_outputs(la, final, consumers.get(la.name, []))]


def qat_model(logits: keras.Model, ranges: dict[str, tuple[float, float]], symmetric: bool,
              grids: Grids) -> tuple[keras.Model, dict[str, list[Planned]], list[dict[str, Any]],
                                     list[dict[str, Any]]]:
    """A fake-quantized copy of a logits model: an ActQuant after every layer that `ranges` names (initial
    range), every kernel weight_quant.plan covers fake-quantized on its grid, BatchNormalization frozen (the
    backends fold it into the conv). Returns the model, the plan, and the report's lists of the layers
    fake-quantized and not (weight_quant.plan)."""
    def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
        if layer.name not in ranges:
            return None
        lo, hi = ranges[layer.name]
        return [LayerEdit(type(layer), layer_config(layer), layer.get_weights()),
                LayerEdit(ActQuant, {"lo": lo, "hi": hi, "symmetric": symmetric, "name": f"{layer.name}_aq"})]

    planned, done, skipped = plan(logits, grids)
    model = rebuild(logits, transform)  # the same layer names
    attach(model, planned)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model, planned, done, skipped


def learned(model: keras.Model, planned: dict[str, list[Planned]]
            ) -> tuple[keras.Model, dict[str, tuple[float, float]]]:
    """The plain float model of a fine-tuned QAT model (planned kernels snapped to their grid, ActQuant
    removed) and the learned activation range of every layer that had one."""
    ranges = {layer.name.removesuffix("_aq"): layer.range() for layer in model.layers if isinstance(layer, ActQuant)}

    def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
        if isinstance(layer, ActQuant):
            return []
        if layer.name in planned:
            return [LayerEdit(type(layer), layer_config(layer), snapped_weights(layer, planned[layer.name]))]
        return None

    return rebuild(model, transform), ranges

"""Model size and compute: parameter count, multiply-accumulates per sample, float weight bytes.

MACs count the layers that dominate inference: convolutions (incl. depthwise, separable, transposed), Dense
on any rank (once per position) and recurrent layers (per time step x steps). Normalisation, pooling,
activations and merges count zero (they are folded or negligible). Unknown (None) dimensions count as 1.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from pipeline.compress.graph import graph_nodes

L = keras.layers
_CONV = (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D)
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_RNN = (L.LSTM, L.GRU, L.SimpleRNN)


def count_params(model: keras.Model) -> int:
    """All weights, trainable or not (BatchNorm statistics included)."""
    return int(model.count_params())


def float_size_bytes(model: keras.Model) -> int:
    """Bytes taken by the weights at their stored dtype."""
    return int(sum(int(np.prod(v.shape, dtype=np.int64)) * np.dtype(v.dtype).itemsize for v in model.weights))


def _prod(dims: Any) -> int:
    return int(np.prod([1 if d is None else int(d) for d in dims], dtype=np.int64))


def _size(variable: Any) -> int:
    return _prod(variable.shape)


def _positions(shape: Any, layer: keras.layers.Layer) -> int:
    """Spatial positions of a conv-like tensor (batch and channel axes excluded)."""
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return _prod(shape[2:] if channels_first else shape[1:-1])


def _rnn_macs(layer: keras.layers.Layer, in_shape: Any) -> int:
    steps = 1 if in_shape[1] is None else int(in_shape[1])
    cell = layer.cell
    return steps * (_size(cell.kernel) + _size(cell.recurrent_kernel))


def layer_macs(layer: keras.layers.Layer, in_shape: Any, out_shape: Any) -> int:
    """Multiply-accumulates of one call of `layer` on one sample."""
    if isinstance(layer, _SEPARABLE):
        return _positions(out_shape, layer) * (_size(layer.depthwise_kernel) + _size(layer.pointwise_kernel))
    if isinstance(layer, _TRANSPOSED):
        return _positions(in_shape, layer) * _size(layer.kernel)
    if isinstance(layer, _CONV):
        return _positions(out_shape, layer) * _size(layer.kernel)
    if isinstance(layer, L.Dense):
        return _prod(out_shape[1:-1]) * _size(layer.kernel)
    if isinstance(layer, _RNN):
        return _rnn_macs(layer, in_shape)
    if isinstance(layer, L.Bidirectional):
        return _rnn_macs(layer.forward_layer, in_shape) + _rnn_macs(layer.backward_layer, in_shape)
    if isinstance(layer, L.TimeDistributed):
        steps = 1 if in_shape[1] is None else int(in_shape[1])
        inner_in = (in_shape[0], *in_shape[2:])
        inner_out = (out_shape[0], *out_shape[2:])
        return steps * layer_macs(layer.layer, inner_in, inner_out)
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one sample through the model (nested models included)."""
    total = 0
    for node in graph_nodes(model):
        op = node.operation
        if isinstance(op, keras.Model):
            total += count_macs(op)
            continue
        if not isinstance(op, keras.layers.Layer) or not node.input_tensors or not node.outputs:
            continue
        total += layer_macs(op, tuple(node.input_tensors[0].shape), tuple(node.outputs[0].shape))
    return total

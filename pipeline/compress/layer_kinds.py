"""How each Keras layer treats the channel axis, for the channel analysis (pipeline.compress.channels)."""

from __future__ import annotations

from typing import Any, Literal

import keras

Mode = Literal["prune", "width"]
L = keras.layers

# Layers whose output units are new channels, and the config key holding their count.
PRODUCERS: dict[type, str] = {
    L.Dense: "units",
    L.Conv1D: "filters",
    L.Conv2D: "filters",
    L.Conv3D: "filters",
    L.Conv1DTranspose: "filters",
    L.Conv2DTranspose: "filters",
    L.Conv3DTranspose: "filters",
    L.SeparableConv1D: "filters",
    L.SeparableConv2D: "filters",
    L.Embedding: "output_dim",
    L.LSTM: "units",
    L.GRU: "units",
    L.SimpleRNN: "units",
}
RNN_GATES: dict[type, int] = {L.LSTM: 4, L.GRU: 3, L.SimpleRNN: 1}

_ELEMENTWISE: tuple[type, ...] = (
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.Identity,
    L.ActivityRegularization,
    L.Masking,
)
_SPATIAL: tuple[type, ...] = (
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
)
_MERGES: tuple[type, ...] = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax")



def last_dim(t: Any) -> int:
    dim = t.shape[-1] if len(t.shape) else None
    return int(dim) if dim is not None else 0


def _channels_last(layer: keras.layers.Layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _axis_is_last(axis: Any, rank: int) -> bool:
    if isinstance(axis, list | tuple):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis in (-1, rank - 1)


def activation_name(layer: keras.layers.Layer) -> str:
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", "") if fn is not None else ""


def layer_kind(layer: keras.layers.Layer, node: Any, mode: Mode) -> str:
    """How the layer treats channels: producer, through, weighted, merge, concat, flatten, reshape, opaque."""
    cls = type(layer)
    rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
    if cls in PRODUCERS:
        if not _channels_last(layer) or getattr(layer, "groups", 1) != 1:
            return "opaque"
        return "producer"
    if cls is L.Activation:
        if mode == "prune" and activation_name(layer) in CHANNEL_MIXING_ACTIVATIONS:
            return "opaque"
        return "through"
    if cls in _ELEMENTWISE or cls in _SPATIAL:
        return "through" if _channels_last(layer) else "opaque"
    if cls is L.Softmax:
        return "through" if mode == "width" else "opaque"
    if cls is L.BatchNormalization:
        return "weighted" if _axis_is_last(layer.axis, rank) else "opaque"
    if cls in (L.LayerNormalization, L.UnitNormalization):
        if mode == "width" and _axis_is_last(layer.axis, rank):
            return "weighted"
        return "opaque"
    if cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
        return "weighted" if layer.depth_multiplier == 1 and _channels_last(layer) else "opaque"
    if cls is L.PReLU:
        shared = layer.shared_axes or []
        return "weighted" if not any(a in (-1, rank - 1) for a in shared) else "opaque"
    if cls in _MERGES:
        return "merge"
    if cls is L.Concatenate:
        return "concat" if _axis_is_last(layer.axis, rank) else "opaque"
    if cls is L.Flatten:
        return "flatten" if _channels_last(layer) else "opaque"
    if cls is L.Reshape and node.input_tensors and len(node.outputs) == 1:
        in_c, out_c = last_dim(node.input_tensors[0]), last_dim(node.outputs[0])
        target = tuple(layer.get_config()["target_shape"])
        return "reshape" if in_c > 0 and in_c == out_c == target[-1] else "opaque"
    return "opaque"

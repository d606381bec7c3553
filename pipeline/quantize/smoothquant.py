"""SmoothQuant-style activation-to-weight migration (Xiao et al. 2023, migration strength alpha = 0.5) of a
Keras 3 model, once for every target. It is not cross-layer equalization in Nagel et al.'s sense (that one,
which balances the *weight* ranges of two consecutive layers, is pipeline.quantize.cle).

A channel whose activations range far wider than its neighbours' (an outlier channel) ruins per-tensor int8
activations: the tensor's one scale is set by the outlier and the other channels keep a few levels. Between
a layer that makes channels (the *head*: Conv/Dense, or a DepthwiseConv) and the layers that read them (the
*tails*: Conv/Dense input rows, or a DepthwiseConv), a channel may be divided by s > 0 at the head and
multiplied by s at the tails when everything in between is positively homogeneous (ReLU, LeakyReLU, PReLU,
linear, pooling, padding, Flatten, Dropout) or per-channel affine (BatchNormalization: its beta and moving
mean divided by s too): the float function is unchanged. SmoothQuant's s_j = max|X_j|^alpha / max|W_j|^(1-alpha)
with alpha = 0.5, i.e. s = sqrt(activation range / tail weight range), taken from the calibration data and
normalised to a geometric mean of 1: the channel's activation range and its tail weights' range meet at their
geometric mean, which evens out the channel ranges of the tensor while keeping the tails' per-channel int8
weights in reach. (SmoothQuant applies it to the inputs of transformer matmuls; here it runs on every
scale-safe head/tail segment of a CNN or MLP.)

Which channels travel together comes from the channel groups of pipeline.compress.channels; a DepthwiseConv
in a group's path splits it into two segments (head -> depthwise, depthwise -> tails), each migrated."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from pipeline.compress.channels import ChannelGraph, analyze_channels
from pipeline.compress.graph import graph_nodes, to_functional
from pipeline.compress.layer_kinds import activation_name

L = keras.layers
VERSION = "1"
ALPHA = 0.5  # SmoothQuant's migration strength: s = act^ALPHA / weight^(1 - ALPHA)
MAX_SCALE = 1e4  # a channel is never rescaled by more than this, either way
HOMOGENEOUS = ("linear", "relu", "leaky_relu")  # f(s x) = s f(x) for s > 0
_MATMUL = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.SeparableConv1D, L.SeparableConv2D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_THROUGH = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D, L.Identity, L.Flatten,
            L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
            L.AveragePooling3D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
            L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.ZeroPadding1D, L.ZeroPadding2D,
            L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D, L.UpSampling1D, L.UpSampling2D,
            L.UpSampling3D, L.Reshape, L.PReLU, L.BatchNormalization)


@dataclass(frozen=True)
class Segment:
    """Channels of one group between a head and its tails; `middle` holds the BatchNorms between them."""

    head: str
    tails: tuple[str, ...]
    middle: tuple[str, ...]
    group: int  # the channel group's root id


@dataclass(frozen=True)
class Migrated:
    """One segment after the migration: the spread of its channel ranges (largest / median) before and after."""

    head: str
    tails: tuple[str, ...]
    channels: int
    spread_before: float
    spread_after: float
    max_scale: float

    def to_dict(self) -> dict[str, Any]:
        return {"head": self.head, "tails": list(self.tails), "channels": self.channels,
                "spread_before": round(self.spread_before, 3), "spread_after": round(self.spread_after, 3),
                "max_scale": round(self.max_scale, 3)}


def _homogeneous(layer: keras.layers.Layer) -> bool:
    """Whether the layer's own activation commutes with a positive per-channel scale."""
    if isinstance(layer, L.ReLU):
        cfg = layer.get_config()
        return cfg.get("max_value") is None and float(cfg.get("threshold", 0.0)) == 0.0
    if isinstance(layer, L.LeakyReLU | L.PReLU):
        return True
    name = activation_name(layer)
    return name in HOMOGENEOUS or (name == "" and not hasattr(layer, "activation"))


def _is_matmul(layer: keras.layers.Layer) -> bool:
    return type(layer) in _MATMUL and getattr(layer, "groups", 1) == 1 and \
        getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _is_depthwise(layer: keras.layers.Layer) -> bool:
    return type(layer) in _DEPTHWISE and layer.depth_multiplier == 1 and layer.data_format == "channels_last"


def _is_through(layer: keras.layers.Layer) -> bool:
    return type(layer) in _THROUGH or (type(layer) in (L.Activation, L.ReLU, L.LeakyReLU) and _homogeneous(layer))


class _Walk:
    """Split each channel group reachable from a head into segments, or reject it."""

    def __init__(self, graph: ChannelGraph, model: keras.Model) -> None:
        self.graph = graph
        self.layers = {layer.name: layer for layer in model.layers}

    def _reads(self, name: str, root: int) -> bool:
        layout = self.graph.input_layouts.get(name)
        return layout is not None and any(self.graph.find(g) == root for g in layout.groups)

    def segment(self, head: str, root: int) -> Segment | None:
        """The segment from `head` to the next matmuls/depthwise convs, or None when a layer in the way is
        not scale-safe."""
        tails: list[str] = []
        middle: list[str] = []
        stack, seen = list(self.graph.consumers.get(head, [])), set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            layer = self.layers[name]
            if (_is_matmul(layer) and self._reads(name, root)) or _is_depthwise(layer):
                tails.append(name)
            elif _is_through(layer):
                if isinstance(layer, L.BatchNormalization):
                    middle.append(name)
                stack += self.graph.consumers.get(name, [])
            else:
                return None
        return Segment(head, tuple(sorted(tails)), tuple(middle), root) if tails else None

    def all_segments(self) -> Iterator[Segment]:
        """Segments in graph order: each group's producer, then its depthwise convs."""
        for group in self.graph.roots():
            if group.frozen or len(group.producers) != 1 or group.size < 2:
                continue
            heads = [self.layers[n] for n in group.producers + group.passthrough]
            for head in heads:
                if (_is_matmul(head) or _is_depthwise(head)) and _homogeneous(head):
                    found = self.segment(head.name, self.graph.find(group.id))
                    if found is not None:
                        yield found


def _positions(graph: ChannelGraph, name: str, root: int, size: int) -> np.ndarray:
    """(size, k): where channel c of group `root` sits along `name`'s input channel axis (k places)."""
    layout = graph.input_layouts[name]
    sizes = [graph.groups[graph.find(g)].size for g in layout.groups]
    total, cols = sum(sizes), []
    offset = 0
    for g, width in zip(layout.groups, sizes, strict=True):
        if graph.find(g) == root:
            cols += [np.arange(size) + offset + r * total for r in range(layout.repeat)]
        offset += width
    return np.stack(cols, axis=1) if cols else np.arange(size)[:, None]


def _tail_kernel(layer: keras.layers.Layer) -> Any:
    return layer.depthwise_kernel if type(layer) in (L.SeparableConv1D, L.SeparableConv2D) else layer.kernel


def _tail_ranges(layer: keras.layers.Layer, pos: np.ndarray) -> np.ndarray:
    """Per channel: the largest |weight| the tail applies to it."""
    k = np.abs(np.asarray(_tail_kernel(layer).numpy()))
    rows = np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1).max(axis=1)  # per input position
    return rows[pos].max(axis=1)


def _scale_tail(layer: keras.layers.Layer, pos: np.ndarray, s: np.ndarray) -> None:
    var = _tail_kernel(layer)
    k = np.array(var.numpy())
    factor = np.ones(k.shape[-2], k.dtype)
    for col in range(pos.shape[1]):
        factor[pos[:, col]] = s
    shape = [1] * k.ndim
    shape[-2] = k.shape[-2]
    var.assign(k * factor.reshape(shape))


def _divide_head(layer: keras.layers.Layer, s: np.ndarray) -> None:
    if _is_depthwise(layer):
        k = np.array(layer.kernel.numpy())
        layer.kernel.assign(k / s.reshape([1] * (k.ndim - 2) + [-1, 1]))
    else:
        var = layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel
        var.assign(np.array(var.numpy()) / s)
    if getattr(layer, "use_bias", False):
        layer.bias.assign(np.array(layer.bias.numpy()) / s)


def _divide_norm(layer: keras.layers.Layer, s: np.ndarray) -> None:
    layer.moving_mean.assign(np.array(layer.moving_mean.numpy()) / s)
    if layer.center:
        layer.beta.assign(np.array(layer.beta.numpy()) / s)


def _scales(act: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """SmoothQuant's s = act^ALPHA / weight^(1 - ALPHA) (alpha 0.5: act / s and weight * s meet at
    sqrt(act * weight)), normalised to a geometric mean of 1."""
    ok = (act > 1e-12) & (weight > 1e-12)
    if ok.sum() < 2:
        return np.ones_like(act)
    s = np.ones_like(act)
    s[ok] = act[ok] ** ALPHA / weight[ok] ** (1.0 - ALPHA)
    s[ok] /= np.exp(np.log(s[ok]).mean())
    return np.clip(s, 1.0 / MAX_SCALE, MAX_SCALE).astype(np.float32)


def _spread(r: np.ndarray) -> float:
    live = r[r > 1e-12]
    return float(live.max() / np.median(live)) if live.size else 1.0


def _tail_inputs(model: keras.Model, segments: list[Segment], samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per tail: the largest |activation| at each input channel position, over the calibration samples."""
    names = sorted({t for seg in segments for t in seg.tails})
    tensors = {}
    for node in graph_nodes(model):
        if node.operation.name in names and node.operation.name not in tensors:
            tensors[node.operation.name] = node.input_tensors[0]
    probe = keras.Model(model.inputs, [tensors[n] for n in names])
    outs = probe.predict(samples, batch_size=64, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return {n: np.abs(o.reshape(-1, o.shape[-1])).max(axis=0) for n, o in zip(names, outs, strict=True)}


def _migrate_segment(model: keras.Model, graph: ChannelGraph, seg: Segment,
                      act_max: dict[str, np.ndarray]) -> Migrated:
    layers = {layer.name: layer for layer in model.layers}
    size = graph.groups[seg.group].size
    pos = {t: _positions(graph, t, seg.group, size) if t in graph.input_layouts else np.arange(size)[:, None]
           for t in seg.tails}
    act = np.max([act_max[t][pos[t]].max(axis=1) for t in seg.tails], axis=0)
    weight = np.max([_tail_ranges(layers[t], pos[t]) for t in seg.tails], axis=0)
    s = _scales(act, weight)
    _divide_head(layers[seg.head], s)
    for name in seg.middle:
        _divide_norm(layers[name], s)
    for t in seg.tails:
        _scale_tail(layers[t], pos[t], s)
    return Migrated(seg.head, seg.tails, size, _spread(act), _spread(act / s), float(max(s.max(), 1 / s.min())))


def migrate(model: keras.Model, samples: np.ndarray) -> tuple[keras.Model, list[Migrated]]:
    """A copy of `model` with every scale-safe channel group migrated on `samples` (preprocessed inputs);
    the float function is unchanged. Returns the copy and what was done per segment (empty: nothing to do)."""
    copy = to_functional(model)
    graph = analyze_channels(copy, "prune")
    segments = list(_Walk(graph, copy).all_segments())
    if not segments:
        return copy, []
    act_max = _tail_inputs(copy, segments, samples)  # ranges are those of the float function: computed once
    return copy, [_migrate_segment(copy, graph, seg, act_max) for seg in segments]

"""Structured pruning: remove whole filters/units, keeping coupled layers consistent.

Channels are ranked per dependency group (see `channels.py`) by the L2 norm of each producer's filter, or
|gamma| of the BatchNorm that directly follows it; scores of the producers joined by an Add are normalised
and summed. The pruned model is rebuilt with smaller configs and sliced weights, so it is genuinely smaller.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from pipeline.compress.channels import ChannelGraph, analyze_channels, keep_count
from pipeline.compress.graph import LayerEdit, layer_config, rebuild, to_functional
from pipeline.compress.layer_kinds import PRODUCERS, RNN_GATES

L = keras.layers
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)


def _take(a: np.ndarray, idx: np.ndarray | None, axis: int) -> np.ndarray:
    return a if idx is None else np.take(a, idx, axis=axis)


def _expand(idx: np.ndarray | None, block: int, times: int, interleaved: bool) -> np.ndarray | None:
    """Indices into `times` blocks of `block`: blockwise (RNN gates) or interleaved (c * times + m)."""
    if idx is None:
        return None
    if interleaved:
        return (idx[:, None] * times + np.arange(times)[None, :]).reshape(-1)
    return np.concatenate([idx + k * block for k in range(times)])


def _weights_by_name(layer: keras.layers.Layer) -> list[tuple[str, np.ndarray]]:
    return [(v.name, a) for v, a in zip(layer.weights, layer.get_weights(), strict=True)]


def slice_producer(
    layer: keras.layers.Layer, in_idx: np.ndarray | None, out_idx: np.ndarray | None
) -> LayerEdit:
    """The producer with input channels `in_idx` and output units `out_idx` kept (None: all)."""
    cls = type(layer)
    units_key = PRODUCERS[cls]
    units = int(layer.get_config()[units_key])
    new_weights = []
    for name, w in _weights_by_name(layer):
        if cls in RNN_GATES:
            gates = RNN_GATES[cls]
            cols = _expand(out_idx, units, gates, interleaved=False)
            if name == "kernel":
                w = _take(_take(w, in_idx, 0), cols, 1)
            elif name == "recurrent_kernel":
                w = _take(_take(w, out_idx, 0), cols, 1)
            else:
                w = _take(w, cols, w.ndim - 1)
        elif cls is L.Embedding:
            w = _take(w, out_idx, 1)
        elif cls in _SEPARABLE:
            mult = int(layer.depth_multiplier)
            if name == "depthwise_kernel":
                w = _take(w, in_idx, w.ndim - 2)
            elif name == "pointwise_kernel":
                rows = _expand(in_idx, 0, mult, interleaved=True)
                w = _take(_take(w, rows, w.ndim - 2), out_idx, w.ndim - 1)
            else:
                w = _take(w, out_idx, 0)
        elif name == "kernel":
            in_axis, out_axis = (w.ndim - 1, w.ndim - 2) if cls in _TRANSPOSED else (w.ndim - 2, w.ndim - 1)
            w = _take(_take(w, in_idx, in_axis), out_idx, out_axis)
        else:  # bias
            w = _take(w, out_idx, 0)
        new_weights.append(w)
    n_out = units if out_idx is None else len(out_idx)
    return LayerEdit(cls, layer_config(layer, **{units_key: n_out}), new_weights)


def slice_passthrough(layer: keras.layers.Layer, idx: np.ndarray) -> LayerEdit:
    """A per-channel layer (BatchNorm, DepthwiseConv, PReLU, LayerNorm) with channels `idx` kept."""
    new_weights = []
    for name, w in _weights_by_name(layer):
        axis = (
            w.ndim - 2
            if name == "kernel" and isinstance(layer, L.DepthwiseConv1D | L.DepthwiseConv2D)
            else w.ndim - 1
        )
        new_weights.append(np.take(w, idx, axis=axis))
    return LayerEdit(type(layer), layer.get_config(), new_weights)


def producer_scores(layer: keras.layers.Layer) -> np.ndarray:
    """Importance of each output unit: L2 norm of its weights."""
    cls = type(layer)
    w = dict(_weights_by_name(layer))
    if cls in RNN_GATES:
        gates = RNN_GATES[cls]
        units = int(layer.get_config()["units"])
        k = w["kernel"].reshape(-1, gates, units)
        r = w["recurrent_kernel"].reshape(-1, gates, units)
        return np.sqrt((k**2).sum(axis=(0, 1)) + (r**2).sum(axis=(0, 1)))
    if cls is L.Embedding:
        return np.linalg.norm(w["embeddings"], axis=0)
    kernel = w["pointwise_kernel"] if cls in _SEPARABLE else w["kernel"]
    out_axis = kernel.ndim - 2 if cls in _TRANSPOSED else kernel.ndim - 1
    moved = np.moveaxis(kernel, out_axis, -1)
    return np.sqrt((moved.reshape(-1, moved.shape[-1]) ** 2).sum(axis=0))


def _bn_after(graph: ChannelGraph, name: str) -> keras.layers.Layer | None:
    consumers = graph.consumers.get(name, [])
    if len(consumers) != 1:
        return None
    layer = graph.model.get_layer(consumers[0])
    if type(layer) is L.BatchNormalization and layer.scale:
        return layer
    return None


def group_scores(graph: ChannelGraph, gid: int) -> np.ndarray:
    """Channel importance in a group: per-producer scores (|BN gamma| if one follows), normalised, summed."""
    group = graph.group(gid)
    total = np.zeros(group.size)
    for name in group.producers:
        bn = _bn_after(graph, name)
        if bn is not None:
            score = np.abs(np.asarray(keras.ops.convert_to_numpy(bn.gamma), dtype=np.float64))
        else:
            score = producer_scores(graph.model.get_layer(name)).astype(np.float64)
        total += score / (score.mean() + 1e-12)
    return total


def group_widths(model: keras.Model) -> dict[str, int]:
    """Width of each prunable channel group, keyed by its first producer's name."""
    graph = analyze_channels(to_functional(model), mode="prune")
    return {g.producers[0]: g.size for g in graph.prunable() if g.producers}


def select_channels(
    graph: ChannelGraph, sparsity: float, reference: Mapping[str, int] | None = None
) -> dict[int, np.ndarray]:
    """Kept channel indices (sorted) for each prunable group that loses channels.

    With `reference` (original widths by first producer, see `group_widths`), `sparsity` applies to those
    widths rather than the current ones, so iterative pruning lands on the same widths as one shot.
    """
    keep: dict[int, np.ndarray] = {}
    for group in graph.prunable():
        base = next((reference[p] for p in group.producers if reference and p in reference), group.size)
        n_keep = min(group.size, keep_count(base, sparsity))
        if n_keep >= group.size:
            continue
        scores = group_scores(graph, group.id)
        order = np.argsort(-scores, kind="stable")
        keep[group.id] = np.sort(order[:n_keep])
    return keep


def apply_channel_keep(graph: ChannelGraph, keep: dict[int, np.ndarray]) -> keras.Model:
    """Rebuild the analysed model keeping only the given channels of each group."""

    sizes = {gid: len(idx) for gid, idx in keep.items()}

    def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
        reshape = graph.reshape_edit(layer, sizes)
        if reshape is not None:
            return [reshape]
        layout = graph.input_layouts.get(layer.name)
        in_idx = graph.layout_indices(layout, keep) if layout is not None else None
        if layer.name in graph.output_group:
            if type(layer) is L.Embedding:
                in_idx = None
            out_idx = keep.get(graph.find(graph.output_group[layer.name]))
            if in_idx is None and out_idx is None:
                return None
            return [slice_producer(layer, in_idx, out_idx)]
        if in_idx is None or not layer.weights:
            return None
        return [slice_passthrough(layer, in_idx)]

    return rebuild(graph.model, transform)


def channel_prune(
    model: keras.Model, sparsity: float, *, reference: Mapping[str, int] | None = None
) -> keras.Model:
    """Remove the `sparsity` fraction of lowest-ranked channels from every prunable group.

    `reference`: original group widths (`group_widths` of the unpruned model) that `sparsity` refers to.

    The final classifier's outputs and anything feeding a layer whose channels cannot be followed keep their
    width. Weights of the survivors are copied, so a channel whose weights are zero is removed losslessly.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    flat = to_functional(model)
    graph = analyze_channels(flat, mode="prune")
    keep = select_channels(graph, sparsity, reference)
    if not keep:
        return flat
    return apply_channel_keep(graph, keep)

"""Which kernels of each Keras layer quantization-aware fine-tuning fake-quantizes, on which target's grid, and
the layers it does not, with the reason: nothing is skipped silently.

Every weighted layer a target quantizes to int8 is covered, its kernels on the grid that target puts them on
(targets.base.weight_grid: levels per WEIGHT_KINDS, per output channel or per tensor, or kept in float), per
output channel on the axis that is the output channel in Keras' layout:

| layer | kernel(s) | Keras layout | one step per | kind |
|---|---|---|---|---|
| Conv1D, Conv2D (Conv3D: kind conv3d) | kernel | (k..., in, out) | out | conv |
| DepthwiseConv1D/2D | kernel | (k..., C, M) | (C, M): output channel c*M+m | depthwise |
| SeparableConv1D/2D | depthwise_kernel, pointwise_kernel | (k..., C, M), (1..., C*M, out) | (C, M); out | depthwise; conv |
| Conv1DTranspose, Conv2DTranspose | kernel | (k..., out, in) | out (axis -2) | transposed |
| Dense, TimeDistributed(Dense) | kernel | (in, out) | out | dense |
| LSTM, GRU, SimpleRNN (also in Bidirectional) | cell kernel, recurrent_kernel | (in, G*units), (units, G*units) | each gate column | recurrent |

The export unrolls recurrent layers (pipeline.quantize.unroll): each time step is two matmuls with the cell's
kernel and recurrent kernel, which every backend quantizes per column, so the fake quantization trains those
two kernels as such. A layer is fake-quantized by wrapping the `call` of the object that reads its kernels
(the layer, its cell or the layer inside a wrapper) so that during the call the kernels read as their
fake-quantized values (straight-through gradient); the variables themselves stay float. numpy + Keras 3."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from calibration import grid

L = keras.layers
LAST, TRANSPOSED, DEPTHWISE, TENSOR = "last", "transposed", "depthwise", "tensor"  # which axes keep own steps
GRID = {LAST: "per output channel", TRANSPOSED: "per output channel (kernel axis -2)",
        DEPTHWISE: "per (channel, multiplier)", TENSOR: "per tensor"}
_RNN = (L.LSTM, L.GRU, L.SimpleRNN)
_CONV = {L.Conv1D: "conv", L.Conv2D: "conv", L.Conv3D: "conv3d"}
RNN_NOTE = ("cell kernels fake-quantized as the unrolled export's matmuls; the gates and the cell state are "
            "quantized with the backend's calibrated ranges, not learned ones")
BN_REASON = ("BatchNormalization: the backends fold it into the convolution or matmul before it (or run it as a "
             "per-channel float scale and shift); frozen during fine-tuning")


@dataclass(frozen=True)
class Kernel:
    """One kernel: the attribute path from the layer to the object whose `call` reads it, and its layout."""

    owner: str  # "" (the layer), "cell", "layer", "forward_layer.cell", ...
    attr: str  # the attribute its `call` reads (a property such as Dense's or Conv's `kernel` reads `_kernel`)
    layout: str  # LAST | TRANSPOSED | DEPTHWISE
    kind: str  # targets.base.WEIGHT_KINDS

    @property
    def name(self) -> str:
        return ".".join(p for p in (self.owner, self.attr) if p)


@dataclass(frozen=True)
class Planned:
    """A kernel on its grid: `levels` integers, per output channel unless per_tensor."""

    kernel: Kernel
    levels: int
    per_tensor: bool


Grids = dict[str, "tuple[int, bool] | str"]  # kind -> (levels, per_tensor), or why the target keeps it in float


def _own_kernels(layer: keras.layers.Layer, owner: str = "") -> list[Kernel] | str:
    """The kernels of a layer QAT can fake-quantize, or why not ("" for a layer without weights)."""
    cls, at = type(layer), (lambda attr, layout, kind: Kernel(owner, attr, layout, kind))
    if getattr(layer, "data_format", "channels_last") not in (None, "channels_last"):
        return f"{cls.__name__} with data_format channels_first: its kernel layout is not mapped"
    if getattr(layer, "quantization_mode", None) is not None or getattr(layer, "lora_enabled", False):
        return f"{cls.__name__} quantized or with LoRA by Keras itself: it reads other variables than its kernel"
    if getattr(layer, "groups", 1) != 1:
        return f"{cls.__name__} with groups > 1: the backends' grouped weight layouts are not mapped"
    if cls in _CONV:
        return [at("kernel", LAST, _CONV[cls])]
    if cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
        return [at("kernel", DEPTHWISE, "depthwise")]
    if cls in (L.SeparableConv1D, L.SeparableConv2D):
        return [at("depthwise_kernel", DEPTHWISE, "depthwise"), at("pointwise_kernel", LAST, "conv")]
    if cls in (L.Conv1DTranspose, L.Conv2DTranspose):
        return [at("kernel", TRANSPOSED, "transposed")]
    if cls is L.Dense:
        return [at("kernel", LAST, "dense")]
    if cls in _RNN:
        cell = f"{owner}.cell" if owner else "cell"
        return [Kernel(cell, "kernel", LAST, "recurrent"), Kernel(cell, "recurrent_kernel", LAST, "recurrent")]
    if cls is L.TimeDistributed:
        return _own_kernels(layer.layer, f"{owner}.layer" if owner else "layer")
    if cls is L.Bidirectional:
        fwd, bwd = _own_kernels(layer.forward_layer, "forward_layer"), _own_kernels(layer.backward_layer,
                                                                                    "backward_layer")
        if isinstance(fwd, list) and isinstance(bwd, list):
            return fwd + bwd
        return fwd if isinstance(fwd, str) else str(bwd)
    if not layer.weights:
        return ""
    if isinstance(layer, L.BatchNormalization):
        return BN_REASON
    return (f"{cls.__name__}: edgepipe has no fake quantization for this layer kind; the backend quantizes its "
            "weights (where it does) from the fine-tuned float values")


def _planned(kernels: list[Kernel], grids: Grids) -> list[Planned] | str:
    out = []
    for k in kernels:
        grid = grids.get(k.kind)
        if grid is None or isinstance(grid, str):
            return grid or f"no int8 grid known for {k.kind} weights"
        out.append(Planned(k, int(grid[0]), bool(grid[1])))
    return out


def plan(model: keras.Model, grids: Grids) -> tuple[dict[str, list[Planned]], list[dict[str, Any]],
                                                      list[dict[str, Any]]]:
    """Per layer name, its kernels on their grid; and the report's lists of the layers fake-quantized (with
    each kernel's grid) and of the weighted layers not fake-quantized (with the reason)."""
    planned: dict[str, list[Planned]] = {}
    done, skipped = [], []
    for layer in model.layers:
        kernels = _own_kernels(layer)
        found = _planned(kernels, grids) if isinstance(kernels, list) else kernels
        if isinstance(found, str):
            if found:
                skipped.append({"layer": layer.name, "class": type(layer).__name__, "reason": found})
            continue
        planned[layer.name] = found
        record: dict[str, Any] = {"layer": layer.name, "class": type(layer).__name__, "kernels": [
            {"weight": p.kernel.name, "kind": p.kernel.kind, "levels": p.levels, "layout": p.kernel.layout,
             "grid": GRID[TENSOR if p.per_tensor else p.kernel.layout]} for p in found]}
        if any(p.kernel.kind == "recurrent" for p in found):
            record["note"] = RNN_NOTE
        done.append(record)
    return planned, done, skipped


def reduced_axes(ndim: int, layout: str, per_tensor: bool) -> tuple[int, ...]:
    """The axes one grid step spans: all but the output channel's (all of them per tensor)."""
    keep = () if per_tensor else {LAST: (ndim - 1,), TRANSPOSED: (ndim - 2,), DEPTHWISE: (ndim - 2, ndim - 1)}[layout]
    return tuple(a for a in range(ndim) if a not in keep)


def quantize_weights(w: Any, levels: int, axes: tuple[int, ...]) -> Any:
    """Symmetric fake quantization with a straight-through gradient: integer multiples of
    max|w| / ((levels - 1) / 2) over `axes` (255 levels: int8 on [-127, 127]; 127: [-63, 63])."""
    return w + ops.stop_gradient(grid.on_symmetric_grid(w, levels, axes, xp=ops) - w)


def on_grid(w: np.ndarray, levels: int, axes: tuple[int, ...]) -> np.ndarray:
    """numpy: w on the grid quantize_weights trains (the same calibration.grid function)."""
    return np.asarray(grid.on_symmetric_grid(w, levels, axes), dtype=np.float32)


def _resolve(layer: keras.layers.Layer, path: str) -> Any:
    obj = layer
    for part in filter(None, path.split(".")):
        obj = getattr(obj, part)
    return obj


def _storage(owner: Any, attr: str) -> str:
    """The attribute that holds the variable: `_kernel` behind a `kernel` property (Keras 3 Dense, Conv)."""
    return f"_{attr}" if isinstance(getattr(type(owner), attr, None), property) else attr


def _wrapped(owner: Any, kernels: list[Planned]) -> Callable[..., Any]:
    inner = owner.call
    slots = {p.kernel.attr: _storage(owner, p.kernel.attr) for p in kernels}

    def call(*args: Any, **kwargs: Any) -> Any:
        saved = {slots[p.kernel.attr]: getattr(owner, slots[p.kernel.attr]) for p in kernels}
        try:
            for p in kernels:
                w = saved[slots[p.kernel.attr]]
                object.__setattr__(owner, slots[p.kernel.attr], quantize_weights(
                    w, p.levels, reduced_axes(len(w.shape), p.kernel.layout, p.per_tensor)))
            return inner(*args, **kwargs)
        finally:
            for attr, v in saved.items():
                object.__setattr__(owner, attr, v)

    return call


def attach(model: keras.Model, planned: dict[str, list[Planned]]) -> None:
    """Fake-quantize the planned kernels of `model`'s layers (their owners' `call`, wrapped in place)."""
    for name, kernels in planned.items():
        layer = model.get_layer(name)
        for owner_path in dict.fromkeys(p.kernel.owner for p in kernels):
            owner = _resolve(layer, owner_path)
            object.__setattr__(owner, "call", _wrapped(owner, [p for p in kernels if p.kernel.owner == owner_path]))


def snapped_weights(layer: keras.layers.Layer, kernels: list[Planned]) -> list[np.ndarray]:
    """The layer's weights with each planned kernel on its grid (what the export writes: the backend
    re-quantizes them exactly)."""
    weights = layer.get_weights()
    index = {id(v): i for i, v in enumerate(layer.weights)}
    for p in kernels:
        owner = _resolve(layer, p.kernel.owner)
        i = index[id(getattr(owner, _storage(owner, p.kernel.attr)))]
        w = weights[i]
        weights[i] = on_grid(w, p.levels, reduced_axes(w.ndim, p.kernel.layout, p.per_tensor))
    return weights

"""Width scaling: the same architecture with fewer filters/units, freshly initialised (a student)."""

from __future__ import annotations

import keras
import numpy as np

from pipeline.compress.channels import analyze_channels
from pipeline.compress.graph import LayerEdit, layer_config, rebuild, to_functional
from pipeline.compress.layer_kinds import PRODUCERS


def scaled_width(size: int, multiplier: float) -> int:
    """round(size * multiplier), half up, at least 1."""
    return max(1, int(np.floor(size * multiplier + 0.5)))


def scale_width(model: keras.Model, multiplier: float) -> keras.Model:
    """The model's architecture with every free channel group scaled by `multiplier`; fresh weights.

    Layers joined by an Add (or Multiply, ...) share one width; depthwise convs, BatchNorm, pooling and
    concatenations follow their inputs; the final classifier and any width a Reshape/unknown layer depends on
    are kept. LSTM/GRU/SimpleRNN units and Embedding dims scale too.
    """
    if multiplier <= 0:
        raise ValueError(f"width multiplier must be > 0, got {multiplier}")
    flat = to_functional(model)
    graph = analyze_channels(flat, mode="width")
    sizes = {g.id: scaled_width(g.size, multiplier) for g in graph.prunable()}

    def transform(layer: keras.layers.Layer) -> list[LayerEdit] | None:
        reshape = graph.reshape_edit(layer, sizes)
        if reshape is not None:
            return [reshape]
        gid = graph.output_group.get(layer.name)
        if gid is None or graph.find(gid) not in sizes:
            return None
        key = PRODUCERS[type(layer)]
        return [LayerEdit(type(layer), layer_config(layer, **{key: sizes[graph.find(gid)]}), None)]

    return rebuild(flat, transform, copy_weights=False)

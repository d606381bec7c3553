"""Walk a Keras 3 functional/Sequential graph and rebuild it with edited layers.

Every model is handled as a flat functional graph: `rebuild` walks the nodes in topological order, inlines
nested models, and calls fresh layers (same or edited config) on the new tensors, so the result has no layer
objects in common with the source. Weights are copied unless an edit says otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np


@dataclass
class LayerEdit:
    """A layer to build in place of (or as part of the replacement of) a source layer.

    `weights` None means: freshly initialised. Several edits for one layer are applied in sequence; the first
    one receives the source layer's call arguments. An empty list removes a single-input layer (identity).
    """

    layer_class: type[keras.layers.Layer]
    config: dict[str, Any]
    weights: list[np.ndarray] | None = None


Transform = Callable[[keras.layers.Layer], list[LayerEdit] | None]


def graph_of(model: keras.Model) -> keras.Model:
    """The functional graph behind a model (a Sequential's inner functional model)."""
    if isinstance(model, keras.Sequential):
        inner = getattr(model, "_functional", None)
        if inner is None:
            raise ValueError(f"Sequential model '{model.name}' is not built: give it an Input or build() it")
        return inner
    if not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            f"model '{model.name}' is a subclassed model; only functional/Sequential graphs work"
        )
    return model


def graph_nodes(model: keras.Model) -> list[Any]:
    """The call nodes of the model's own graph (input nodes excluded), parents before children."""
    graph = graph_of(model)
    by_depth = graph._nodes_by_depth
    ordered = []
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            ordered.append(node)
    return ordered


def producer(tensor: Any) -> Any:
    """The operation (layer) that produced a symbolic tensor."""
    return tensor._keras_history.operation


def final_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer that produces the model's single output."""
    outputs = graph_of(model).outputs
    if len(outputs) != 1:
        raise ValueError(
            f"model '{model.name}' has {len(outputs)} outputs; one classifier output is expected"
        )
    return producer(outputs[0])


def inbound_layers(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """For each layer name, the layers whose outputs it consumes (input layers included)."""
    result: dict[str, list[keras.layers.Layer]] = {}
    for node in graph_nodes(model):
        parents = result.setdefault(node.operation.name, [])
        for t in node.input_tensors:
            op = producer(t)
            if op is not None and all(op is not p for p in parents):
                parents.append(op)
    return result


def outbound_layers(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """For each layer name, the layers that consume its outputs."""
    result: dict[str, list[keras.layers.Layer]] = {}
    for node in graph_nodes(model):
        for t in node.input_tensors:
            op = producer(t)
            if op is None:
                continue
            children = result.setdefault(op.name, [])
            if all(node.operation is not c for c in children):
                children.append(node.operation)
    return result


def _pack(tensors: Sequence[Any]) -> Any:
    return tensors[0] if len(tensors) == 1 else list(tensors)


class _Rebuilder:
    def __init__(self, transform: Transform | None, copy_weights: bool) -> None:
        self.transform = transform
        self.copy_weights = copy_weights
        self.made: dict[int, list[keras.layers.Layer]] = {}
        self.names: set[str] = set()
        self.pending: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []

    def _unique(self, name: str) -> str:
        candidate, i = name, 1
        while candidate in self.names:
            candidate = f"{name}_{i}"
            i += 1
        self.names.add(candidate)
        return candidate

    def layers_for(self, layer: keras.layers.Layer) -> list[keras.layers.Layer]:
        if id(layer) in self.made:
            return self.made[id(layer)]
        edits = self.transform(layer) if self.transform is not None else None
        if edits is None:
            weights = layer.get_weights() if self.copy_weights else None
            edits = [LayerEdit(type(layer), layer.get_config(), weights)]
        new_layers = []
        for edit in edits:
            config = dict(edit.config)
            config["name"] = self._unique(str(config.get("name") or layer.name))
            new = edit.layer_class.from_config(config)
            new_layers.append(new)
            if edit.weights is not None:
                self.pending.append((new, edit.weights))
        self.made[id(layer)] = new_layers
        return new_layers

    def call(self, op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A node of the source graph, called with the new layers (a plain keras.ops operation as it is)."""
        if not isinstance(op, keras.layers.Layer):
            return op(*args, **kwargs)
        layers = self.layers_for(op)
        if not layers:
            return args[0]
        out = layers[0](*args, **kwargs)
        for follower in layers[1:]:
            out = follower(out)
        return out


NodeCall = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


def walk(model: keras.Model, inputs: Sequence[Any], call: NodeCall) -> list[Any]:
    """The model's graph evaluated on `inputs` (symbolic tensors or concrete arrays), node by node, parents first:
    `call(operation, args, kwargs)` gives each layer's or keras.ops operation's output; a nested model is walked
    with the same `call` (inlined). Each value is dropped once the last node that reads it has run."""
    graph = graph_of(model)
    values = {id(x): y for x, y in zip(graph.inputs, inputs, strict=True)}
    nodes = graph_nodes(graph)
    uses = Counter(id(t) for node in nodes for t in node.input_tensors)
    kept = {id(x) for x in graph.outputs}
    for node in nodes:
        op = node.operation
        if isinstance(op, keras.layers.InputLayer) or any(id(x) not in values for x in node.input_tensors):
            continue
        args, kwargs = node.arguments.fill_in(values)
        if isinstance(op, keras.Model):
            out = _pack(walk(op, keras.tree.flatten(args[0]), call))
        else:
            out = call(op, args, kwargs)
        for x, y in zip(node.outputs, keras.tree.flatten(out), strict=True):
            values[id(x)] = y
        for t in node.input_tensors:
            uses[id(t)] -= 1
            if uses[id(t)] == 0 and id(t) not in kept:
                del values[id(t)]
    return [values[id(x)] for x in graph.outputs]


def rebuild(
    model: keras.Model, transform: Transform | None = None, *, copy_weights: bool = True
) -> keras.Model:
    """A new flat functional model with the same graph; `transform(layer)` may replace layers.

    `transform` returns None to clone a layer as is (weights copied when `copy_weights`), or a list of
    `LayerEdit`s to build instead. Nested models are inlined. Shared layers stay shared.
    """
    graph = graph_of(model)
    rebuilder = _Rebuilder(transform, copy_weights)
    new_inputs = []
    for x in graph.inputs:
        name = rebuilder._unique(producer(x).name)
        new_inputs.append(keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype, name=name))
    outputs = walk(graph, new_inputs, rebuilder.call)
    new_model = keras.Model(_pack(new_inputs), _pack(outputs), name=model.name)
    for layer, weights in rebuilder.pending:
        layer.set_weights(weights)
    return new_model


def to_functional(model: keras.Model) -> keras.Model:
    """A flat functional copy (weights copied) of a functional or Sequential model."""
    return rebuild(model)


def layer_config(layer: keras.layers.Layer, **changes: Any) -> dict[str, Any]:
    """The layer's config with some keys changed."""
    config = dict(layer.get_config())
    config.update(changes)
    return config

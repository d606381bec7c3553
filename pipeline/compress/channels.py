"""Channel dependency groups of a functional graph: which layer widths must change together.

Each tensor's last (channel) axis is described as a `Layout`: a concatenation of channel groups, repeated
`repeat` times after a Flatten (HxWxC layout flattened: index = position * C + channel). A group is created
by a *producer* (Conv/Dense/Embedding/RNN units), passed through by elementwise and per-channel layers
(BatchNorm, DepthwiseConv with multiplier 1, pooling, activations), joined by Add/Multiply/... (their inputs
must share one group) and concatenated by Concatenate; a Reshape that keeps the last axis passes them through (its target shape is
rewritten). Groups reaching a model output or a layer we cannot
follow (Reshape, Lambda, attention, unknown layers) are frozen: their width must not change.

Mode "prune" is stricter than "width": layers that mix channels in a normalisation (LayerNorm, softmax over
channels) are fine to rebuild at another width but do not survive removing channels, so they freeze.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from pipeline.compress.graph import LayerEdit, graph_nodes, layer_config, outbound_layers
from pipeline.compress.layer_kinds import (
    CHANNEL_MIXING_ACTIVATIONS,
    PRODUCERS,
    Mode,
    activation_name,
    last_dim,
    layer_kind,
)

L = keras.layers

@dataclass(frozen=True)
class Layout:
    """A tensor's channel axis: the groups it concatenates, repeated `repeat` times (after Flatten)."""

    groups: tuple[int, ...]
    repeat: int = 1


@dataclass
class ChannelGroup:
    """Channels that are kept or removed together."""

    id: int
    size: int
    producers: list[str] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)  # per-channel weighted layers (BN, depthwise...)
    frozen: bool = False


@dataclass
class ChannelGraph:
    """The result of `analyze_channels`; group ids in layouts are resolved with `find`."""

    model: keras.Model
    groups: dict[int, ChannelGroup]
    parent: dict[int, int]
    input_layouts: dict[str, Layout]  # first input of every layer with weights
    output_group: dict[str, int]  # producer layer name -> group of its output channels
    consumers: dict[str, list[str]]
    reshapes: dict[str, Layout] = field(default_factory=dict)  # Reshapes that keep the channel axis

    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def group(self, gid: int) -> ChannelGroup:
        return self.groups[self.find(gid)]

    def roots(self) -> list[ChannelGroup]:
        return [g for gid, g in self.groups.items() if self.find(gid) == gid]

    def prunable(self) -> list[ChannelGroup]:
        """Groups whose width may change, in creation order."""
        return [g for g in self.roots() if not g.frozen and g.size > 0]

    def layout_size(self, layout: Layout, sizes: dict[int, int]) -> int:
        """Channel count of a layout with the groups in `sizes` (root id -> width) resized."""
        roots = [self.find(g) for g in layout.groups]
        return sum(sizes.get(r, self.groups[r].size) for r in roots) * layout.repeat

    def reshape_edit(self, layer: keras.layers.Layer, sizes: dict[int, int]) -> LayerEdit | None:
        """A channel-keeping Reshape rebuilt for resized groups (None when its width is unchanged)."""
        layout = self.reshapes.get(layer.name)
        if layout is None:
            return None
        channels = self.layout_size(layout, sizes)
        target = tuple(layer.get_config()["target_shape"])
        if channels == target[-1]:
            return None
        return LayerEdit(type(layer), layer_config(layer, target_shape=(*target[:-1], channels)), None)

    def layout_indices(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray | None:
        """Kept indices along a tensor's channel axis, or None when nothing in it changes."""
        roots = [self.find(g) for g in layout.groups]
        if not any(r in keep for r in roots):
            return None
        parts, offset = [], 0
        for r in roots:
            size = self.groups[r].size
            parts.append(offset + (keep[r] if r in keep else np.arange(size)))
            offset += size
        one = np.concatenate(parts)
        return np.concatenate([one + i * offset for i in range(layout.repeat)])


class _Analysis:
    def __init__(self, model: keras.Model, mode: Mode) -> None:
        self.model = model
        self.mode = mode
        self.groups: dict[int, ChannelGroup] = {}
        self.parent: dict[int, int] = {}
        self.layouts: dict[int, Layout | None] = {}
        self.input_layouts: dict[str, Layout] = {}
        self.output_group: dict[str, int] = {}
        self.reshapes: dict[str, Layout] = {}

    def new_group(self, size: int, frozen: bool = False) -> int:
        gid = len(self.groups)
        self.groups[gid] = ChannelGroup(gid, size, frozen=frozen)
        self.parent[gid] = gid
        return gid

    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self.groups[ra], self.groups[rb]
        if ga.size != gb.size:
            ga.frozen = gb.frozen = True
            return
        keep, gone = (ra, rb) if ra < rb else (rb, ra)
        gk, gg = self.groups[keep], self.groups[gone]
        self.parent[gone] = keep
        gk.frozen = gk.frozen or gg.frozen
        gk.producers += [p for p in gg.producers if p not in gk.producers]
        gk.passthrough += [p for p in gg.passthrough if p not in gk.passthrough]

    def freeze(self, layout: Layout | None) -> None:
        if layout is not None:
            for g in layout.groups:
                self.groups[self.find(g)].frozen = True

    def size(self, layout: Layout) -> int:
        return sum(self.groups[self.find(g)].size for g in layout.groups) * layout.repeat

    def unify(self, layouts: list[Layout | None]) -> Layout | None:
        """Make layouts that meet elementwise share groups; freeze them when they cannot."""
        first = layouts[0]
        ok = first is not None and all(
            other is not None
            and other.repeat == first.repeat
            and len(other.groups) == len(first.groups)
            and all(
                self.groups[self.find(a)].size == self.groups[self.find(b)].size
                for a, b in zip(first.groups, other.groups, strict=True)
            )
            for other in layouts[1:]
        )
        if not ok or first is None:
            for layout in layouts:
                self.freeze(layout)
            return None
        for other in layouts[1:]:
            assert other is not None
            for a, b in zip(first.groups, other.groups, strict=True):
                self.union(a, b)
        return first

    def frozen_outputs(self, node: Any) -> list[Layout | None]:
        return [Layout((self.new_group(last_dim(t), frozen=True),)) for t in node.outputs]

    def visit(self, node: Any) -> list[Layout | None]:
        layer = node.operation
        ins = [self.layouts.get(id(t)) for t in node.input_tensors]
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.Model):
            for layout in ins:
                self.freeze(layout)
            return self.frozen_outputs(node)
        kind = layer_kind(layer, node, self.mode)
        first = ins[0] if ins else None
        if layer.weights and first is not None and kind != "producer":
            previous = self.input_layouts.get(layer.name)
            if previous is not None:
                first = self.unify([previous, first])
            else:
                self.input_layouts[layer.name] = first
        if kind == "producer":
            return self.visit_producer(layer, node, ins)
        if kind == "opaque":
            for layout in ins:
                self.freeze(layout)
            return self.frozen_outputs(node)
        if first is None and kind not in ("merge", "concat"):
            return self.frozen_outputs(node)
        return getattr(self, f"visit_{kind}")(layer, node, ins, first)

    def visit_through(self, layer: Any, node: Any, ins: list[Layout | None], first: Layout) -> list[Layout | None]:
        return [first for _ in node.outputs]

    def visit_weighted(self, layer: Any, node: Any, ins: list[Layout | None], first: Layout) -> list[Layout | None]:
        for g in first.groups:
            group = self.groups[self.find(g)]
            if layer.name not in group.passthrough:
                group.passthrough.append(layer.name)
        return [first for _ in node.outputs]

    def visit_merge(self, layer: Any, node: Any, ins: list[Layout | None], first: Any) -> list[Layout | None]:
        if len({last_dim(t) for t in node.input_tensors}) != 1:
            for layout in ins:
                self.freeze(layout)
            return self.frozen_outputs(node)
        return [self.unify(ins)]

    def visit_reshape(self, layer: Any, node: Any, ins: list[Layout | None], first: Layout) -> list[Layout | None]:
        if first.repeat != 1:
            self.freeze(first)
            return self.frozen_outputs(node)
        previous = self.reshapes.get(layer.name)
        if previous is None:
            self.reshapes[layer.name] = first
        else:  # a shared Reshape: every input must resize alike (unify freezes them when not)
            self.unify([previous, first])
        return [first]

    def visit_concat(self, layer: Any, node: Any, ins: list[Layout | None], first: Any) -> list[Layout | None]:
        if any(x is None or x.repeat != 1 for x in ins):
            for layout in ins:
                self.freeze(layout)
            return self.frozen_outputs(node)
        return [Layout(tuple(g for x in ins if x is not None for g in x.groups))]

    def visit_flatten(self, layer: Any, node: Any, ins: list[Layout | None], first: Layout) -> list[Layout | None]:
        spatial = node.input_tensors[0].shape[1:-1]
        if any(d is None for d in spatial):
            self.freeze(first)
            return self.frozen_outputs(node)
        return [Layout(first.groups, first.repeat * int(np.prod(spatial, dtype=np.int64)))]

    def visit_producer(
        self, layer: keras.layers.Layer, node: Any, ins: list[Layout | None]
    ) -> list[Layout | None]:
        name = layer.name
        if type(layer) is not L.Embedding and ins:
            previous = self.input_layouts.get(name)
            if previous is not None:
                self.unify([previous, ins[0]])
            elif ins[0] is not None:
                self.input_layouts[name] = ins[0]
            else:
                self.input_layouts.pop(name, None)
            for extra in ins[1:]:  # initial states, masks...: their channels must not move
                self.freeze(extra)
        if name not in self.output_group:
            units = int(layer.get_config()[PRODUCERS[type(layer)]])
            gid = self.new_group(units)
            self.groups[gid].producers.append(name)
            if activation_name(layer) in CHANNEL_MIXING_ACTIVATIONS:
                self.groups[gid].frozen = True
            self.output_group[name] = gid
        gid = self.output_group[name]
        return [Layout((gid,)) for _ in node.outputs]

    def run(self) -> ChannelGraph:
        for x in self.model.inputs:
            self.layouts[id(x)] = Layout((self.new_group(last_dim(x), frozen=True),))
        for node in graph_nodes(self.model):
            outs = self.visit(node)
            for t, layout in zip(node.outputs, outs, strict=True):
                self.layouts[id(t)] = layout
        for t in self.model.outputs:
            self.freeze(self.layouts.get(id(t)))
        # A producer whose input channels were frozen still owns its output; a producer fed by something
        # we could not describe has no input layout (its input side never changes).
        consumers = {k: [c.name for c in v] for k, v in outbound_layers(self.model).items()}
        return ChannelGraph(
            self.model,
            self.groups,
            self.parent,
            self.input_layouts,
            self.output_group,
            consumers,
            self.reshapes,
        )


def analyze_channels(model: keras.Model, mode: Mode = "prune") -> ChannelGraph:
    """Channel groups of a flat functional model (use `graph.to_functional` first for nested/Sequential)."""
    if isinstance(model, keras.Sequential) or any(isinstance(layer, keras.Model) for layer in model.layers):
        raise ValueError("analyze_channels needs a flat functional model: call to_functional() first")
    return _Analysis(model, mode).run()


def keep_count(size: int, sparsity: float) -> int:
    """How many of `size` channels survive removing a `sparsity` fraction (at least one)."""
    return max(1, min(size, int(np.floor(size * (1.0 - sparsity) + 0.5))))

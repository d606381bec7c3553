"""Fold the BatchNorm of a 1-D convolution into the convolution in an ONNX graph, as the other backends do.

Keras exports a Conv1D (or DepthwiseConv1D) as Unsqueeze -> Conv -> Squeeze, and the BatchNormalization after
it as Mul and Add by per-channel constants on the squeezed tensor. With the Squeeze in between, ONNX Runtime's
Conv+Mul/Add fusions do not apply, so the quantizer put its own Q/DQ pair on the Mul and on the Add outputs:
two requantizations the model was never trained with (the BatchNorm's scale alone spans the per-tensor range
of the conv output a second time). Folded, Conv -> Squeeze -> (the rest) is the same float function and
TensorRT sees one int8 convolution, as the 2-D case and the other backends have it. numpy + onnx."""

from __future__ import annotations

from typing import Any

import numpy as np


def _channel_vector(value: np.ndarray | None, rank: int, channels: int) -> np.ndarray | None:
    """The constant as one value per channel when it broadcasts along axis 1 of a rank-`rank` tensor only."""
    if value is None or value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + tuple(value.shape)
    if shape[1] != channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return value.reshape(channels).astype(np.float32)


class _Graph:
    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.values = {name: numpy_helper.to_array(i) for name, i in self.inits.items()}
        self.users: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.users.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}

    def only_user(self, tensor: str, op_type: str) -> Any | None:
        users = self.users.get(tensor, [])
        if len(users) != 1 or users[0].op_type != op_type or tensor in self.outputs:
            return None
        return users[0]

    def constant_operand(self, node: Any | None, tensor: str) -> np.ndarray | None:
        if node is None:
            return None
        other = [n for n in node.input if n != tensor]
        return self.values.get(other[0]) if len(other) == 1 else None


def _fold_one(g: _Graph, conv: Any) -> bool:
    """Fold the Mul [and Add] after conv -> Squeeze into conv; whether it did."""
    from onnx import numpy_helper

    squeeze = g.only_user(conv.output[0], "Squeeze")
    weight = g.values.get(conv.input[1])
    if squeeze is None or weight is None or len(g.users.get(conv.input[1], [])) != 1:
        return False
    axes = g.values.get(squeeze.input[1]) if len(squeeze.input) > 1 else None
    if axes is None or any(int(a) % weight.ndim < 2 for a in np.ravel(axes)):  # N and C stay
        return False
    channels, rank = weight.shape[0], weight.ndim - np.ravel(axes).size  # the squeezed tensor's rank
    mul = g.only_user(squeeze.output[0], "Mul")
    scale = _channel_vector(g.constant_operand(mul, squeeze.output[0]), rank, channels)
    if mul is None or scale is None:
        return False
    add = g.only_user(mul.output[0], "Add")
    shift = _channel_vector(g.constant_operand(add, mul.output[0]), rank, channels)
    last = add if add is not None and shift is not None else mul
    if last.output[0] in g.outputs:
        return False
    bias = g.values[conv.input[2]] if len(conv.input) > 2 and conv.input[2] in g.values else np.zeros(channels)
    new_w = (weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))).astype(weight.dtype)
    new_b = (bias * scale + (shift if shift is not None else 0.0)).astype(weight.dtype)
    g.inits[conv.input[1]].CopyFrom(numpy_helper.from_array(new_w, conv.input[1]))
    bias_name = f"{conv.name}_folded_bias"
    g.graph.initializer.append(numpy_helper.from_array(new_b, bias_name))
    del conv.input[2:]
    conv.input.append(bias_name)
    for node in g.users.get(last.output[0], []):
        for i, name in enumerate(node.input):
            if name == last.output[0]:
                node.input[i] = squeeze.output[0]
    g.graph.node.remove(mul)
    if last is not mul:
        g.graph.node.remove(last)
    return True


def fold_squeezed_scale_shift(model: Any) -> int:
    """Conv -> Squeeze -> Mul(per-channel constant) [-> Add(per-channel constant)] folded into the Conv's weights
    and bias, in place; how many convolutions took one. Only where every tensor on the way has one reader."""
    folded = 0
    for conv in [n for n in model.graph.node if n.op_type == "Conv"]:
        g = _Graph(model)  # rebuilt per fold: the readers change
        folded += _fold_one(g, conv)
    return folded

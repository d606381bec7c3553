"""Read the int8 grids out of each artifact with its runtime's own API, and compare them with a fine-tuned Keras
model's, layer by layer: the tests' independent check that an artifact carries the grid QAT trained.

Weights: every int8 weight tensor (.tflite: the weight operand of CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV,
FULLY_CONNECTED, CONV_3D; ONNX: DequantizeLinear of an int8 initializer; OpenVINO IR: an i8 Constant -> Convert
-> Multiply by its scale), as (integers, one step per channel). A Keras kernel on its grid matches one of them
when, channel by channel, the artifact holds exactly the kernel's integers w / step (compared as sorted
vectors, so any layout, transposition or flip of the backend's matches; a sign flip too: a BatchNorm with a
negative gamma folded in), and the artifact's steps are the kernel's times the per-channel factor of any
BatchNorm the converter folded in (`fold`, default 1).

Activations: the .tflite tensors' (scale, zero point), the ONNX activation QuantizeLinear scales, the IR's
activation FakeQuantize limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TFLITE_WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "TRANSPOSE_CONV": 1, "FULLY_CONNECTED": 1, "CONV_3D": 1}


@dataclass(frozen=True)
class Grid:
    """One int8 weight tensor of an artifact: its integers by channel (rows) and each channel's step."""

    ints: np.ndarray  # (channels, values per channel), int
    steps: np.ndarray  # (channels,)


def _by_channel(q: np.ndarray, scales: np.ndarray, axis: int | tuple[int, ...]) -> Grid:
    axes = tuple(a % q.ndim for a in ((axis,) if isinstance(axis, int) else axis))
    moved = np.moveaxis(q, axes, tuple(range(len(axes))))
    channels = int(np.prod([q.shape[a] for a in axes]))
    if scales.size == 1:  # per tensor: one row
        return Grid(q.reshape(1, -1).astype(np.int64), scales.reshape(1).astype(np.float64))
    return Grid(moved.reshape(channels, -1).astype(np.int64), scales.reshape(-1).astype(np.float64))


def tflite_grids(path: Path) -> list[Grid]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    details = {d["index"]: d for d in interp.get_tensor_details()}
    found, seen = [], set()
    for op in interp._get_ops_details():
        k = TFLITE_WEIGHT_OPS.get(op["op_name"])
        if k is None or len(op["inputs"]) <= k or op["inputs"][k] in seen:
            continue
        d = details[op["inputs"][k]]
        if d["dtype"] != np.int8:
            continue
        seen.add(op["inputs"][k])
        q = d["quantization_parameters"]
        found.append(_by_channel(interp.get_tensor(d["index"]), q["scales"], int(q["quantized_dimension"])))
    return found


def onnx_grids(path: Path) -> list[Grid]:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    found = []
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in inits or inits[n.input[0]].dtype != np.int8:
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        found.append(_by_channel(inits[n.input[0]], inits[n.input[1]], axis))
    return found


def openvino_grids(path: Path) -> list[Grid]:
    """i8 Constant -> Convert -> Multiply(scale); the scale's non-1 axes are the channel axes."""
    import openvino as ov

    found = []
    for op in ov.Core().read_model(str(path)).get_ordered_ops():
        if op.get_type_name() != "Multiply":
            continue
        conv = op.input_value(0).get_node()
        const = conv.input_value(0).get_node() if conv.get_type_name() == "Convert" else None
        if const is None or const.get_type_name() != "Constant" or const.get_element_type() != ov.Type.i8:
            continue
        q, scale = const.get_data(), op.input_value(1).get_node().get_data()
        axes = tuple(a for a, n in enumerate(scale.shape) if n > 1) or (0,)
        found.append(_by_channel(q, scale.reshape(-1), axes))
    return found


READERS = {"tflite": tflite_grids, "tensorrt": onnx_grids, "openvino": openvino_grids}


def keras_grid(kernel: np.ndarray, layout: str, levels: int, fold: np.ndarray | None = None) -> Grid:
    """A fine-tuned kernel's grid: integers w / step by output channel, and each channel's step (times the
    factor of a BatchNorm the converter folds into it). layout: last | transposed | depthwise."""
    from pipeline.quantize.weight_quant import reduced_axes

    axes = reduced_axes(kernel.ndim, layout, False)
    half = (levels - 1) / 2.0
    step = np.abs(kernel).max(axis=axes, keepdims=True) / half
    ints = kernel / step
    assert np.allclose(ints, np.round(ints), atol=1e-3), "the kernel is not on its grid"
    keep = tuple(a for a in range(kernel.ndim) if a not in axes)
    grid = _by_channel(np.round(ints).astype(np.int64), step.reshape(-1), keep)
    return Grid(grid.ints, grid.steps * (np.abs(fold) if fold is not None else 1.0))


def _key(row: np.ndarray) -> tuple[int, ...]:
    s = np.sort(row)
    return tuple(min(s.tolist(), np.sort(-row).tolist()))


def same_grid(expected: Grid, got: Grid, rtol: float = 1e-5) -> bool:
    """The artifact's tensor holds exactly the expected integers, channel by channel, with the same steps."""
    if expected.ints.shape != got.ints.shape:
        return False
    mine = sorted(zip(map(_key, expected.ints), expected.steps, strict=True))
    theirs = sorted(zip(map(_key, got.ints), got.steps, strict=True))
    return all(a[0] == b[0] and np.isclose(a[1], b[1], rtol=rtol, atol=0) for a, b in zip(mine, theirs, strict=True))


def find(expected: Grid, grids: list[Grid]) -> Grid | None:
    return next((g for g in grids if same_grid(expected, g)), None)


def tflite_activations(path: Path) -> list[tuple[float, int]]:
    """(scale, zero point) of every per-tensor int8 tensor."""
    from ai_edge_litert.interpreter import Interpreter

    out = []
    for d in Interpreter(model_path=str(path)).get_tensor_details():
        q = d["quantization_parameters"]
        if d["dtype"] == np.int8 and len(q["scales"]) == 1:
            out.append((float(q["scales"][0]), int(q["zero_points"][0])))
    return out


def onnx_activation_scales(path: Path) -> list[float]:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return [float(inits[n.input[1]]) for n in g.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1]


def openvino_activation_limits(path: Path) -> list[tuple[float, float, int]]:
    """(input low, input high, levels) of every activation FakeQuantize."""
    import openvino as ov

    out = []
    for op in ov.Core().read_model(str(path)).get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or op.input(0).get_source_output().get_node().get_type_name() == "Constant":
            continue
        lo, hi = (op.input(i).get_source_output().get_node().get_data() for i in (1, 2))
        out.append((float(np.min(lo)), float(np.max(hi)), int(op.get_attributes()["levels"])))
    return out

"""OpenVINO IR weights that keep the 7-bit grid a model was fine-tuned on.

NNCF's overflow fix quantizes convolution and matmul weights on half of the int8 range: per output channel,
step 2 max|w| / 127 with integers in [-64, 63] (max|w| itself falls half-way between 63 and 64 steps, so no
weights are ever exactly on that grid and re-quantizing them moves them again). Quantization-aware
fine-tuning trains these weights on step max|w| / 63, integers in [-63, 63] (pipeline.quantize.weight_quant),
which the overflow fix allows too. NNCF keeps those integers but writes its own step, 126/127 of the trained
one: every such channel would come out 0.8% smaller than trained. Here every int8 weight of the quantized IR
whose float constant lies exactly on the trained grid gets that grid back (the trained integers and steps);
the weights of any other model are left as NNCF wrote them. Depthwise GroupConvolution weights, which NNCF
keeps at 8 bits (step max|w| / 127), are on NNCF's own grid already."""

from __future__ import annotations

from typing import Any

import numpy as np

WEIGHTED = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul"}
HALF = 63  # the trained 7-bit grid: integers in [-63, 63]
ON_GRID = 1e-3  # |w / step - round(w / step)| below which a float weight counts as on the grid
TRAINED_NOTE = ("{n} int8 weight tensor(s) lay on the 7-bit grid they were fine-tuned on (step max|w| / 63 per "
                "output channel): the IR keeps those steps and integers instead of NNCF's 2 max|w| / 127")


def _compressed(op: Any) -> tuple[Any, Any, Any] | None:
    """(Multiply, Convert, i8 Constant) feeding the op's weights, or None."""
    import openvino as ov

    mul = op.input_value(1).get_node()
    if mul.get_type_name() != "Multiply":
        return None
    conv = mul.input_value(0).get_node()
    const = conv.input_value(0).get_node() if conv.get_type_name() == "Convert" else None
    if const is None or const.get_type_name() != "Constant" or const.get_element_type() != ov.Type.i8:
        return None
    return mul, conv, const


def _trained(w: np.ndarray, scale_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """(integers, steps) of `w` on the trained grid, per the channel axes of `scale_shape`, or None."""
    if len(scale_shape) != w.ndim:
        return None
    axes = tuple(a for a, n in enumerate(scale_shape) if n == 1)
    step = np.abs(w).max(axis=axes, keepdims=True) / HALF
    if np.any(step <= 0):
        return None
    ints = w / step
    if np.abs(ints - np.round(ints)).max() > ON_GRID:
        return None
    return np.round(ints).astype(np.int8), step.astype(np.float32)


def keep_trained_grids(q_model: Any, ov_float: Any) -> int:
    """Give every int8 weight of `q_model` whose float constant in `ov_float` (the op of the same name) lies on
    the trained 7-bit grid its trained integers and steps; how many did."""
    import openvino.opset13 as ops

    floats = {op.get_friendly_name(): op for op in ov_float.get_ops() if op.get_type_name() in WEIGHTED}
    kept = 0
    for op in q_model.get_ordered_ops():
        found = _compressed(op) if op.get_type_name() in WEIGHTED else None
        twin = floats.get(op.get_friendly_name())
        if found is None or twin is None or twin.input_value(1).get_node().get_type_name() != "Constant":
            continue
        mul, conv, const = found
        w = twin.input_value(1).get_node().get_data().astype(np.float32)
        scale = mul.input_value(1).get_node().get_data()
        grid = _trained(w, scale.shape) if w.shape == tuple(const.get_output_shape(0)) else None
        if grid is None:
            continue
        ints, steps = grid
        if np.allclose(steps, scale, rtol=1e-6, atol=0) and np.array_equal(ints, const.get_data()):
            continue  # NNCF's grid is the trained one already (8-bit depthwise)
        conv.input(0).replace_source_output(ops.constant(ints).output(0))
        mul.input(1).replace_source_output(ops.constant(steps.astype(scale.dtype)).output(0))
        kept += 1
    q_model.validate_nodes_and_infer_types()
    return kept

"""OpenVINO activations: the float IR's values on the calibration set (computed in f32, as Keras computes them),
and the activation FakeQuantize limits edgepipe sets after NNCF: the entropy range (both bounds), and the
ranges learned in quantization-aware fine-tuning, on the grid they were trained on. A learned range also
reaches the tensors a Concat joins into its tensor (NNCF puts one FakeQuantize on each input of a Concat: a
TimeDistributed layer's time steps, say), as one per-tensor range did in training."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from calibration import CalibrationSet
from calibration.learned import LearnedRange, Signatures, match, on_grid
from calibration.ranges import ValueCollector

from . import runner

# float activations (calibration, entropy ranges, learned ranges' signatures) in f32, as Keras computes them: the
# CPU plugin's default inference precision is bf16 where the CPU has AVX512_BF16 or AMX, 0.3% off
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
LAYOUT = ("Unsqueeze", "Squeeze", "Reshape", "Transpose")  # ops that move values without changing them


def each_output(ov_model: Any, names: list[tuple[str, int]], calib: CalibrationSet
                 ) -> Iterator[dict[tuple[str, int], np.ndarray]]:
    """Per calibration sample, the values of the named (op, port) outputs of `ov_model` (left unchanged);
    a Parameter's values are the inputs themselves."""
    import openvino as ov

    m = ov_model.clone()
    ops = {op.get_friendly_name(): op for op in m.get_ops()}
    wanted = [(n, p) for n, p in names if n in ops and ops[n].get_type_name() != "Parameter"]
    params = [(n, p) for n, p in names if n in ops and ops[n].get_type_name() == "Parameter"]
    added = m.add_outputs([ops[n].output(p) for n, p in wanted]) if wanted else []
    results = [o.get_node().get_friendly_name() for o in m.outputs]
    index = [results.index(o.get_node().get_friendly_name()) for o in added]
    request = ov.Core().compile_model(m, "CPU", F32).create_infer_request()
    for batch in calib.batches(1):
        result = request.infer(batch if isinstance(batch, dict) else [batch.astype(np.float32)])
        got = {key: np.array(result[i]) for key, i in zip(wanted, index, strict=True)}
        if isinstance(batch, dict):  # several inputs: a Parameter's values are its own input's
            yield {**got, **{key: batch[runner.plain_name(key[0])] for key in params
                             if runner.plain_name(key[0]) in batch}}
        else:
            yield {**got, **{key: batch for key in params}}


def outputs_of(ov_model: Any, names: list[tuple[str, int]], calib: CalibrationSet) -> dict[tuple[str, int], list]:
    """Every value of the named outputs on each sample (small sets: the sensitivity probe's)."""
    values: dict[tuple[str, int], list] = {}
    for sample in each_output(ov_model, names, calib):
        for key, v in sample.items():
            values.setdefault(key, []).append(v)
    return values


def collected_values(ov_model: Any, names: list[tuple[str, int]], calib: CalibrationSet) -> ValueCollector:
    """A bounded subsample of each named output's values over the calibration set (as the other backends
    collect theirs), keyed by "op:port"; never every activation of every sample."""
    values = ValueCollector(per_batch=max(1024, (1 << 18) // max(1, len(calib))))
    for sample in each_output(ov_model, names, calib):
        for (n, p), v in sample.items():
            values.add(f"{n}:{p}", v)
    return values


def activation_fqs(q_model: Any) -> list[tuple[Any, tuple[str, int]]]:
    """Activation FakeQuantize ops (not weights) and the (op name, port) they quantize."""
    found = []
    for op in q_model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        src = op.input(0).get_source_output()
        if src.get_node().get_type_name() == "Constant":
            continue
        found.append((op, (src.get_node().get_friendly_name(), src.get_index())))
    return found


def set_limits(fq: Any, lo: float, hi: float) -> None:
    """An activation FakeQuantize's input and output limits set to [lo, hi] moved onto the grid of its levels
    whose zero point is an integer (calibration.learned.on_grid): what the fake quantization trains and what
    NNCF writes for an asymmetric range."""
    import openvino.opset13 as ops

    lo, hi = on_grid(lo, hi, float(fq.get_attributes()["levels"] - 1))
    for i, limit in ((1, lo), (2, hi), (3, lo), (4, hi)):
        b = fq.input(i).get_source_output().get_node().get_data()
        fq.input(i).replace_source_output(ops.constant(np.full_like(b, limit)).output(0))


def apply_entropy(q_model: Any, ov_float: Any, calib: CalibrationSet) -> None:
    """Set every activation FakeQuantize to the entropy range of the tensor it quantizes, both bounds (the KL
    threshold clips the magnitudes; a lower bound the data stays above is kept), where it is narrower than
    the min-max range NNCF wrote."""
    from calibration.ranges import estimate_range

    fqs = activation_fqs(q_model)
    values = collected_values(ov_float, [key for _, key in fqs], calib)
    collected = set(values.names())
    for fq, (name, port) in fqs:
        if f"{name}:{port}" not in collected:
            continue
        lo, hi = estimate_range(values.values(f"{name}:{port}"), "entropy")
        bounds = [fq.input(i).get_source_output().get_node().get_data() for i in (1, 2)]
        if hi - lo > 0.0 and hi - lo < float(np.max(bounds[1])) - float(np.min(bounds[0])):
            set_limits(fq, lo, hi)
    q_model.validate_nodes_and_infer_types()


def _joined(ov_float: Any) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """Each Concat's output, and the (op, port) outputs it joins, followed back through layout-only ops."""
    out = {}
    for op in ov_float.get_ordered_ops():
        if op.get_type_name() != "Concat":
            continue
        parts = []
        for i in range(op.get_input_size()):
            src = op.input_value(i)
            while src.get_node().get_type_name() in LAYOUT:
                src = src.get_node().input_value(0)
            parts.append((src.get_node().get_friendly_name(), src.get_index()))
        out[(op.get_friendly_name(), 0)] = parts
    return out


def apply_learned(q_model: Any, ov_float: Any, calib: CalibrationSet, ranges: tuple[LearnedRange, ...]) -> int:
    """Set every activation FakeQuantize whose input matches a learned range (calibration.learned), or is
    joined by a Concat into a tensor that matches one, to that range on the grid it was trained on (input and
    output limits alike, as NNCF writes them); how many were set."""
    fqs = activation_fqs(q_model)
    joined = _joined(ov_float)
    signatures = Signatures()
    for sample in each_output(ov_float, list(dict.fromkeys([key for _, key in fqs] + list(joined))), calib):
        for key, v in sample.items():
            signatures.add(key, v)
    found = match(ranges, signatures.values())
    for concat, parts in joined.items():
        if concat in found:
            for part in parts:
                found.setdefault(part, found[concat])
    for fq, key in fqs:
        if key in found:
            set_limits(fq, found[key].lo, found[key].hi)
    q_model.validate_nodes_and_infer_types()
    return sum(key in found for _, key in fqs)

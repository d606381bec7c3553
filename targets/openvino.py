"""OpenVINO for Intel CPUs: convert the SavedModel, quantize the IR with NNCF, save .xml/.bin.

Calibration uses NNCF's own range-estimator presets where they exist (MINMAX, MEAN_QUANTILE, HISTOGRAM).
NNCF has no KL (entropy) estimator: `entropy` quantizes with MINMAX, then scales each activation
FakeQuantize's range to the TensorRT-style KL threshold computed here (numpy) from float activations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from calibration import CalibrationSet
from calibration.learned import LearnedRange, Signatures, match, note
from calibration.ranges import ValueCollector
from calibration.sensitivity import SAMPLES, sensitivity_table, sqnr_db

from . import runner
from .base import (
    DeviceFamily,
    ExportOptions,
    ExportResult,
    FloatModel,
    Precision,
    TargetName,
    UnsupportedPrecision,
)
from .runner import OpenVINOSession

PRESET = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "mse": "HISTOGRAM", "entropy": "MINMAX"}
METHOD_NOTE = {
    "minmax": "NNCF RangeEstimatorParametersSet.MINMAX (global min/max; NNCF's own default is MEAN_MINMAX)",
    "percentile": "NNCF RangeEstimatorParametersSet.MEAN_QUANTILE (0.01% / 99.99% quantiles per sample, "
                  "averaged over samples)",
    "mse": "NNCF RangeEstimatorParametersSet.HISTOGRAM (histogram search minimising the L2 quantization error)",
    "entropy": "NNCF has no KL estimator: MINMAX, then each activation FakeQuantize range scaled to the "
               "TensorRT-style KL threshold edgepipe computed (numpy) from the float activations",
}
OVERFLOW_NOTE = ("NNCF overflow_fix ENABLE: convolution and matmul weights quantized to 7 bits (symmetric per output "
                 "channel, step max|w| / 63: integers in [-63, 63]; depthwise GroupConvolution weights stay 8-bit, "
                 "[-127, 127]), so the int16 pair sums of AVX2's VPMADDUBSW cannot saturate on x86 CPUs without "
                 "VNNI (NNCF's default FIRST_LAYER protects only the first layer); see "
                 "BENCHMARKS-openvino-overflow.md")
NO_INT16 = ("NNCF quantizes activations for OpenVINO's integer kernels, which are 8-bit: a 16-bit FakeQuantize "
            "would run as float emulation on the CPU")
NOTE_FP16 = ("fp16: ov.save_model(compress_to_fp16=True): f16 weight constants, decompressed on load; the CPU "
             "plugin computes in its inference precision (f32 on x86 without AVX512-FP16/AMX, bf16/f16 where it has them)")
WEIGHTED = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul"}
_converted: dict[str, Any] = {}  # saved model dir -> float ov.Model, converted once per process


def float_model(model: FloatModel) -> Any:
    key = str(model.saved_model_dir)
    if key not in _converted:
        import openvino as ov

        earlier = model.reusable("model_float.xml")
        if earlier is not None:
            _converted[key] = ov.Core().read_model(str(earlier))
        else:
            ov_model = ov.convert_model(key)
            if model.inputs:  # several inputs: each by its name (runner.plain_name of the port)
                ports = {runner.plain_name(p.get_any_name()): p for p in ov_model.inputs}
                ov_model.reshape({ports[n]: [1, *shape] for n, shape in model.inputs})
            else:
                ov_model.reshape([1, *model.input_shape])
            _converted[key] = ov_model
    return _converted[key]


def _nncf_quantize(ov_model: Any, calib: CalibrationSet, method: str, ignored: list[str], equalize: bool,
                   validate: bool = True) -> Any:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    advanced = AdvancedQuantizationParameters(
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, PRESET[method]),
        disable_channel_alignment=not equalize, overflow_fix=OverflowFix.ENABLE)  # OVERFLOW_NOTE
    scope = nncf.IgnoredScope(names=ignored, validate=validate) if ignored else None
    return nncf.quantize(ov_model, nncf.Dataset(list(calib.batches(1))), subset_size=len(calib),
                         fast_bias_correction=not equalize, ignored_scope=scope, advanced_parameters=advanced)


def _each_output(ov_model: Any, names: list[tuple[str, int]], calib: CalibrationSet
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
    request = ov.Core().compile_model(m, "CPU").create_infer_request()
    for batch in calib.batches(1):
        result = request.infer(batch if isinstance(batch, dict) else [batch.astype(np.float32)])
        got = {key: np.array(result[i]) for key, i in zip(wanted, index, strict=True)}
        if isinstance(batch, dict):  # several inputs: a Parameter's values are its own input's
            yield {**got, **{key: batch[runner.plain_name(key[0])] for key in params
                             if runner.plain_name(key[0]) in batch}}
        else:
            yield {**got, **{key: batch for key in params}}


def _outputs_of(ov_model: Any, names: list[tuple[str, int]], calib: CalibrationSet) -> dict[tuple[str, int], list]:
    """Every value of the named outputs on each sample (small sets: the sensitivity probe's)."""
    values: dict[tuple[str, int], list] = {}
    for sample in _each_output(ov_model, names, calib):
        for key, v in sample.items():
            values.setdefault(key, []).append(v)
    return values


def collected_values(ov_model: Any, names: list[tuple[str, int]], calib: CalibrationSet) -> ValueCollector:
    """A bounded subsample of each named output's values over the calibration set (as the other backends
    collect theirs), keyed by "op:port"; never every activation of every sample."""
    values = ValueCollector(per_batch=max(1024, (1 << 18) // max(1, len(calib))))
    for sample in _each_output(ov_model, names, calib):
        for (n, p), v in sample.items():
            values.add(f"{n}:{p}", v)
    return values


def _activation_fqs(q_model: Any) -> list[tuple[Any, tuple[str, int]]]:
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


def _apply_entropy(q_model: Any, ov_float: Any, calib: CalibrationSet) -> None:
    """Scale every activation FakeQuantize's bounds to the KL threshold of the tensor it quantizes."""
    import openvino.opset13 as ops

    from calibration.ranges import estimate_range

    fqs = _activation_fqs(q_model)
    values = collected_values(ov_float, [key for _, key in fqs], calib)
    collected = set(values.names())
    for fq, (name, port) in fqs:
        if f"{name}:{port}" not in collected:
            continue
        lo, hi = estimate_range(values.values(f"{name}:{port}"), "entropy")
        bounds = [fq.input(i).get_source_output().get_node().get_data() for i in range(1, 5)]
        current = max(float(np.abs(bounds[0]).max()), float(np.abs(bounds[1]).max()))
        threshold = max(abs(lo), abs(hi))
        if not 0.0 < threshold < current:
            continue
        for i, b in enumerate(bounds, start=1):
            fq.input(i).replace_source_output(ops.constant((b * (threshold / current)).astype(b.dtype)).output(0))
    q_model.validate_nodes_and_infer_types()


def _apply_learned(q_model: Any, ov_float: Any, calib: CalibrationSet, ranges: tuple[LearnedRange, ...]) -> int:
    """Set every activation FakeQuantize whose input matches a learned range (calibration.learned) to that
    range (input and output limits alike, as NNCF writes them); how many were set."""
    import openvino.opset13 as ops

    fqs = _activation_fqs(q_model)
    signatures = Signatures()
    for sample in _each_output(ov_float, [key for _, key in fqs], calib):
        for key, v in sample.items():
            signatures.add(key, v)
    found = match(ranges, signatures.values())
    for fq, key in fqs:
        if key in found:
            for i, limit in ((1, found[key].lo), (2, found[key].hi), (3, found[key].lo), (4, found[key].hi)):
                b = fq.input(i).get_source_output().get_node().get_data()
                fq.input(i).replace_source_output(ops.constant(np.full_like(b, limit)).output(0))
    q_model.validate_nodes_and_infer_types()
    return sum(key in found for _, key in fqs)


def _save(ov_model: Any, path: Path, fp16: bool = False) -> None:
    """Save the IR without the build's temporary input path in its rt_info (the same model and calibration
    then give the same bytes) and without NNCF's record of every quantization parameter: a 1.3 KB repr of
    defaults in the XML, about 3% of a small int8 IR. The NNCF version stays; the calibration used is in
    report.json."""
    import openvino as ov

    ov_model.set_rt_info("float SavedModel exported by edgepipe", ["conversion_parameters", "input_model"])
    if ov_model.has_rt_info(["nncf", "quantization"]):
        version = ov_model.get_rt_info(["nncf", "version"]).astype(str)
        del ov_model.get_rt_info()["nncf"]
        ov_model.set_rt_info(version, ["nncf", "version"])
    ov.save_model(ov_model, str(path), compress_to_fp16=fp16)


class OpenVINOTarget:
    name = TargetName.OPENVINO
    version = "8"  # 8: precisions
    host_latency_note = None
    supports_equalize = True
    device_family = DeviceFamily.X86_CPU
    symmetric_activations = False
    weight_levels = 127  # NNCF overflow_fix=ENABLE (OVERFLOW_NOTE): 7-bit weights, step max|w| / 63
    weight_levels_by_kind = {"depthwise": 255}  # NNCF leaves GroupConvolution (depthwise) at 8 bits: [-127, 127]
    per_tensor_weights: frozenset[str] = frozenset()
    float_weights: dict[str, str] = {}
    precisions = (Precision.INT8, Precision.FP16, Precision.FLOAT)
    unsupported = {Precision.INT16X8: NO_INT16}

    def quantized(self, model: FloatModel, calib: CalibrationSet, opts: ExportOptions) -> tuple[Any, list[str]]:
        """The NNCF model, and a note when learned ranges replaced calibrated ones."""
        ov_float = float_model(model)
        q = _nncf_quantize(ov_float, calib, opts.calibration_method, list(opts.float_layers), opts.equalize)
        if opts.calibration_method == "entropy":
            _apply_entropy(q, ov_float, calib)
        if not opts.activation_ranges:
            return q, []
        return q, [note(_apply_learned(q, ov_float, calib, opts.activation_ranges), opts.activation_ranges)]

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        import nncf
        import openvino as ov

        if opts.precision not in self.precisions:
            raise UnsupportedPrecision(f"openvino: no {opts.precision.value} ({self.unsupported[opts.precision]})")
        out_dir.mkdir(parents=True, exist_ok=True)
        _save(float_model(model), out_dir / "model_float.xml")
        stem = {Precision.INT8: "model_int8", Precision.FP16: "model_fp16"}.get(opts.precision, "model_float")
        if opts.precision is Precision.INT8:
            q, learned = self.quantized(model, calib, opts)
            _save(q, out_dir / "model_int8.xml")
            notes = self._int8_notes(opts) + learned
        else:
            notes = [NOTE_FP16] if opts.precision is Precision.FP16 else []
            if opts.precision is Precision.FP16:
                _save(float_model(model).clone(), out_dir / "model_fp16.xml", fp16=True)
        return ExportResult(
            artifact=f"{stem}.xml",
            float_artifact=None if opts.precision is Precision.FLOAT else "model_float.xml",
            precision=opts.precision.value,
            files=tuple(dict.fromkeys((f"{stem}.xml", f"{stem}.bin", "model_float.xml", "model_float.bin"))),
            float_layers=tuple(opts.float_layers) if opts.precision is Precision.INT8 else (),
            calibration=opts.calibration_method if opts.precision is Precision.INT8 else "none",
            versions={"openvino": ov.get_version().split("-")[0], "nncf": nncf.__version__},
            notes=tuple(notes),
        )

    @staticmethod
    def _int8_notes(opts: ExportOptions) -> list[str]:
        notes = [f"calibration {opts.calibration_method}: {METHOD_NOTE[opts.calibration_method]}",
                 OVERFLOW_NOTE,
                 "the IR's rt_info keeps NNCF's version, not its 1.3 KB record of default parameters"]
        if opts.float_layers:
            notes.append(f"{len(opts.float_layers)} op(s) kept in float (nncf.IgnoredScope names)")
        if opts.equalize:
            notes.append("equalize: NNCF channel alignment (cross-layer equalization style) and full bias "
                         "correction instead of the fast one")
        return notes

    def sensitivity(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, eval_x: np.ndarray,
                    eval_y: np.ndarray, opts: ExportOptions | None = None, metric: str = "accuracy",
                    higher_is_better: bool = True) -> list[dict[str, Any]]:
        """Each weighted op quantized alone (every other op in NNCF's ignored scope): SQNR of its output against
        the float model on the calibration samples, and eval accuracy."""
        opts = opts or ExportOptions()
        small = calib.head(SAMPLES)
        probe = _Probe(float_model(model), small, opts, eval_x, eval_y, metric)
        return sensitivity_table(probe, higher_is_better=higher_is_better)


class _Probe:
    """OpenVINO's LayerProbe: NNCF with every other op in the ignored scope; SQNR of the op's output."""

    def __init__(self, ov_float: Any, small: CalibrationSet, opts: ExportOptions, x: np.ndarray,
                 y: np.ndarray, metric: str) -> None:
        self.ov_float, self.small, self.opts, self.x, self.y, self.metric = ov_float, small, opts, x, y, metric
        ops = ov_float.get_ordered_ops()
        self.every = [op.get_friendly_name() for op in ops]
        self.weighted = [op.get_friendly_name() for op in ops if op.get_type_name() in WEIGHTED]
        self.reference = _outputs_of(ov_float, [(n, 0) for n in self.weighted], small)

    def candidates(self) -> list[str]:
        return self.weighted

    def quantized_alone(self, layer: str) -> Any:
        return _nncf_quantize(self.ov_float, self.small, self.opts.calibration_method,
                              [n for n in self.every if n != layer], self.opts.equalize, validate=False)

    def sqnr(self, layer: str, model: Any) -> float | None:
        got = _outputs_of(model, [(layer, 0)], self.small).get((layer, 0))
        if got is None or (layer, 0) not in self.reference:
            return None
        return sqnr_db(self.reference[(layer, 0)], got)

    def accuracy(self, model: Any) -> float:
        return runner.evaluate(OpenVINOSession(model, 1), self.x, self.y, self.metric)

"""OpenVINO for Intel CPUs: convert the SavedModel, quantize the IR with NNCF, save .xml/.bin.

Calibration uses NNCF's own range-estimator presets where they exist (MINMAX, MEAN_QUANTILE, HISTOGRAM).
NNCF has no KL (entropy) estimator: `entropy` quantizes with MINMAX, then sets each activation
FakeQuantize's limits to the entropy range computed here (numpy) from float activations, both bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibration import CalibrationSet
from calibration.learned import note
from calibration.sensitivity import sqnr_db

from . import runner
from .base import (
    DeviceFamily,
    ExportOptions,
    ExportResult,
    FloatModel,
    Precision,
    TargetName,
    plain_result,
    start_export,
)
from .openvino_activations import apply_entropy, apply_learned, outputs_of
from .openvino_weights import TRAINED_NOTE, WEIGHTED, keep_trained_grids
from .runner import OpenVINOSession
from .sensitivity import RuntimeProbe, SensitivityRequest

PRESET = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "mse": "HISTOGRAM", "entropy": "MINMAX"}
METHOD_NOTE = {
    "minmax": "NNCF RangeEstimatorParametersSet.MINMAX (global min/max; NNCF's own default is MEAN_MINMAX)",
    "percentile": "NNCF RangeEstimatorParametersSet.MEAN_QUANTILE (0.01% / 99.99% quantiles per sample, "
                  "averaged over samples)",
    "mse": "NNCF RangeEstimatorParametersSet.HISTOGRAM (histogram search minimising the L2 quantization error)",
    "entropy": "NNCF has no KL estimator: MINMAX, then each activation FakeQuantize set to the entropy range "
               "edgepipe computed (numpy) from the float activations: both bounds, the TensorRT-style KL "
               "threshold clipping the magnitudes",
}
OVERFLOW_NOTE = ("NNCF overflow_fix ENABLE: convolution and matmul weights quantized to 7 bits (symmetric per output "
                 "channel, NNCF's step 2 max|w| / 127: integers in [-64, 63]; weights fine-tuned on the 7-bit grid "
                 "keep theirs, step max|w| / 63, integers in [-63, 63]; depthwise GroupConvolution weights stay "
                 "8-bit, [-127, 127]), so the int16 pair sums of AVX2's VPMADDUBSW cannot saturate on x86 CPUs "
                 "without VNNI (NNCF's default FIRST_LAYER protects only the first layer); see "
                 "BENCHMARKS-openvino-overflow.md")
NO_INT16 = ("NNCF quantizes activations for OpenVINO's integer kernels, which are 8-bit: a 16-bit FakeQuantize "
            "would run as float emulation on the CPU")
NOTE_FP16 = ("fp16: ov.save_model(compress_to_fp16=True): f16 weight constants, decompressed on load; the CPU "
             "plugin computes in its inference precision (f32 on x86 without AVX512-FP16/AMX, bf16/f16 where it has them)")
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
    version = "9"  # 9: learned and entropy ranges on the grid, both entropy bounds; 8: precisions
    host_latency_note: str | None = None
    supports_equalize = True
    device_family = DeviceFamily.X86_CPU
    symmetric_activations = False
    weight_levels = 127  # QAT's 7-bit grid, step max|w| / 63, [-63, 63]: the IR keeps it (openvino_weights)
    weight_levels_by_kind = {"depthwise": 255}  # NNCF leaves GroupConvolution (depthwise) at 8 bits: [-127, 127]
    per_tensor_weights: frozenset[str] = frozenset()
    float_weights: dict[str, str] = {}
    precisions: tuple[Precision, ...] = (Precision.INT8, Precision.FP16, Precision.FLOAT)
    unsupported = {Precision.INT16X8: NO_INT16}

    def quantized(self, model: FloatModel, calib: CalibrationSet, opts: ExportOptions) -> tuple[Any, list[str]]:
        """The NNCF model, and notes when weights kept their trained grid (openvino_weights) or learned ranges
        replaced calibrated ones."""
        ov_float = float_model(model)
        q = _nncf_quantize(ov_float, calib, opts.calibration_method, list(opts.float_layers), opts.equalize)
        if opts.calibration_method == "entropy":
            apply_entropy(q, ov_float, calib)
        kept = keep_trained_grids(q, ov_float)
        notes = [TRAINED_NOTE.format(n=kept)] if kept else []
        if not opts.activation_ranges:
            return q, notes
        return q, [*notes, note(apply_learned(q, ov_float, calib, opts.activation_ranges), opts.activation_ranges)]

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        import nncf
        import openvino as ov

        start_export(self, opts, out_dir)
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
        return plain_result(opts, f"{stem}.xml", "model_float.xml",
                            (f"{stem}.xml", f"{stem}.bin", "model_float.xml", "model_float.bin"),
                            {"openvino": ov.get_version().split("-")[0], "nncf": nncf.__version__}, notes)

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

    def probe(self, req: SensitivityRequest) -> RuntimeProbe:
        """Each weighted op quantized alone (every other op in NNCF's ignored scope): SQNR of its output against
        the float model on the calibration samples, and eval accuracy."""
        return _Probe(req)


class _Probe(RuntimeProbe):
    """OpenVINO's LayerProbe: NNCF with every other op in the ignored scope; SQNR of the op's output."""

    def __init__(self, req: SensitivityRequest) -> None:
        super().__init__(req)
        self.ov_float = ov_float = float_model(req.model)
        ops = ov_float.get_ordered_ops()
        self.every = [op.get_friendly_name() for op in ops]
        self.weighted = [op.get_friendly_name() for op in ops if op.get_type_name() in WEIGHTED]
        self.reference = outputs_of(ov_float, [(n, 0) for n in self.weighted], self.small)

    def candidates(self) -> list[str]:
        return self.weighted

    def quantized_alone(self, layer: str) -> Any:
        opts = self.req.opts
        return _nncf_quantize(self.ov_float, self.small, opts.calibration_method,
                              [n for n in self.every if n != layer], opts.equalize, validate=False)

    def sqnr(self, layer: str, model: Any) -> float | None:
        got = outputs_of(model, [(layer, 0)], self.small).get((layer, 0))
        if got is None or (layer, 0) not in self.reference:
            return None
        return sqnr_db(self.reference[(layer, 0)], got)

    def session(self, model: Any) -> runner.Session:
        return OpenVINOSession(model, 1)

"""TensorRT on NVIDIA Jetson: ONNX with symmetric int8 Q/DQ (zero points 0, per-channel weights),
plus build_engine.sh that builds the engine with trtexec on the device.

Calibration is ONNX Runtime's: MinMax, Percentile and Entropy natively. ONNX Runtime has no MSE
calibrator (its Distribution method computes float8 statistics, not an int8 range), so `mse` ranges are
computed here (numpy) from the float activations and handed to quantize_static as TensorQuantOverrides."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from calibration import CalibrationSet
from calibration.learned import LearnedRange, Signatures, match, note
from calibration.ranges import ValueCollector
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
from .onnx_fold import fold_squeezed_scale_shift
from .runner import OnnxRuntimeSession
from .sensitivity import RuntimeProbe, SensitivityRequest

ENGINE_SCRIPT = """#!/usr/bin/env bash
# Build the TensorRT engine on the Jetson from the Q/DQ model next to this script (explicit int8).
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${TRTEXEC:-trtexec}"
command -v "$TRTEXEC" >/dev/null || TRTEXEC=/usr/src/tensorrt/bin/trtexec
"$TRTEXEC" --onnx=model_qdq.onnx --int8 --fp16 --saveEngine=model_int8.engine "$@"
"""
# the engine per precision: (ONNX artifact, what the script says it builds, trtexec flags, engine file)
ENGINES = {
    Precision.INT8: ("model_qdq.onnx", "explicit int8", "--int8 --fp16", "model_int8.engine"),
    Precision.FP16: ("model_fp16.onnx", "fp16", "--fp16", "model_fp16.engine"),
    Precision.FLOAT: ("model_fp32.onnx", "fp32, TF32 off", "--noTF32", "model_float.engine"),
}
NO_INT16 = "TensorRT's Q/DQ layers take int8, fp8 and int4 (fp4), not int16"
NOTE_FP16 = ("fp16: float16 weights and activations (onnxruntime.transformers.float16, keep_io_types: float32 "
             "input and output); trtexec --fp16. On this host ONNX Runtime's CPU provider runs the fp16 nodes "
             "through its inserted casts, so host accuracy has fp16 weights with float32 arithmetic")
# TensorRT: symmetric int8 (zero point 0) everywhere; it fuses float biases itself.
QDQ_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
ORT_METHOD = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "mse": "MinMax"}
COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool", "BatchNormalization",
               "InstanceNormalization", "LayerNormalization", "Resize"}
LAYOUT_OPS = {"Squeeze", "Unsqueeze", "Reshape", "Transpose", "Flatten"}  # they move values, never change them
_prepared: dict[str, Path] = {}  # saved model dir -> folder with model_fp32.onnx and model_pre.onnx


def to_onnx(model: FloatModel, path: Path) -> None:
    """Keras' own ONNX export when there is a Keras model; tf2onnx's saved-model path otherwise."""
    if model.keras_path is not None:
        import keras

        km = keras.saving.load_model(model.keras_path, compile=False)
        km(model.zeros())  # Keras exports only models that were called
        km.export(str(path), format="onnx", verbose=False)
        if model.inputs:
            _one_batch_axis(path)
        return
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(model.saved_model_dir),
           "--output", str(path), "--opset", "17"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("tf2onnx failed: " + (done.stderr.strip().splitlines() or ["?"])[-1])


def _one_batch_axis(path: Path) -> None:
    """Name every input's and output's batch axis "N": the exporter gives each its own unknown symbol, and
    ONNX Runtime's symbolic shape inference (quant_pre_process) cannot join two of them (several inputs)."""
    import onnx

    m = onnx.load(str(path))
    for value in [*m.graph.input, *m.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
    onnx.save(m, str(path))


def _fold_batchnorms(path: Path) -> None:
    """A 1-D convolution's BatchNorm (Mul and Add after its Squeeze) folded into it (targets.onnx_fold)."""
    import onnx

    m = onnx.load(str(path))
    if fold_squeezed_scale_shift(m):
        onnx.save(m, str(path))


def prepared(model: FloatModel) -> Path:
    """model_fp32.onnx and its quant_pre_process'ed twin, converted once per process."""
    key = str(model.saved_model_dir)
    if key not in _prepared:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        folder = Path(tempfile.mkdtemp(prefix="edgepipe-onnx-"))
        atexit.register(shutil.rmtree, folder, True)
        earlier = model.reusable("model_fp32.onnx")
        if earlier is not None:
            shutil.copy2(earlier, folder / "model_fp32.onnx")
        else:
            to_onnx(model, folder / "model_fp32.onnx")
            _fold_batchnorms(folder / "model_fp32.onnx")
        quant_pre_process(str(folder / "model_fp32.onnx"), str(folder / "model_pre.onnx"), skip_symbolic_shape=False)
        _prepared[key] = folder
    return _prepared[key]


def _input_names(path: Path) -> list[str]:
    """The graph's inputs (initializers listed as inputs by old exporters left out)."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {i.name for i in graph.initializer}
    return [str(i.name) for i in graph.input if i.name not in weights]


def _feeds(calib: CalibrationSet, names: list[str]) -> list[dict[str, np.ndarray]]:
    """Each calibration sample as an ONNX feed: every input by its ONNX name (runner.feed_list matches the
    Keras input names)."""
    return [dict(zip(names, (a.astype(np.float32) for a in runner.feed_list(b, names)), strict=True))
            for b in calib.batches(1)]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a CalibrationSet."""

    def __init__(self, calib: CalibrationSet, input_names: list[str]) -> None:
        self._it = iter(_feeds(calib, input_names))

    def get_next(self) -> dict | None:
        return next(self._it, None)


def _collect(pre: Path, calib: CalibrationSet, work: Path, collector: Any) -> None:
    """collector.add(tensor name, value) for the input and every float activation of `pre` on calib."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    aug = work / "model_aug.onnx"
    modify_model_output_intermediate_tensors(str(pre), str(aug))
    sess = ort.InferenceSession(str(aug), providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    names = [i.name for i in sess.get_inputs()]
    for feed in _feeds(calib, names):
        for name in names:
            collector.add(name, feed[name])
        for out, v in zip(outs, sess.run(None, feed), strict=True):
            if out.endswith("_ReshapedSavedOutput"):
                collector.add(out.removesuffix("_ReshapedSavedOutput"), v)
    aug.unlink()


def _mse_overrides(pre: Path, calib: CalibrationSet, work: Path) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides with the MSE-optimal symmetric range of every float activation."""
    values = ValueCollector(per_batch=max(1024, (1 << 18) // max(1, len(calib))))
    _collect(pre, calib, work, values)
    ranges = values.ranges("mse", symmetric=True)
    return {t: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for t, (lo, hi) in ranges.items()}


def learned_overrides(pre: Path, calib: CalibrationSet, work: Path, ranges: tuple[LearnedRange, ...],
                      ) -> dict[str, list[dict[str, Any]]]:
    """TensorQuantOverrides fixing the scale (zero point 0) of every activation that matches a learned range
    (calibration.learned): max|range| / 127, the grid the symmetric fake quantization trained on. A Relu's
    input takes its output's scale (zero point 0: clipping then Relu equals Relu then clipping), and so does
    the tensor before any layout-only op in front of it (a 1-D convolution's output before its Squeeze: ONNX
    Runtime gives a Squeeze's output its input's scale)."""
    import onnx

    signatures = Signatures()
    _collect(pre, calib, work, signatures)
    found = match(ranges, signatures.values())
    nodes = onnx.load(str(pre)).graph.node
    made_by = {out: n for n in nodes for out in n.output}
    for node in nodes:  # TensorRT fuses Conv+Relu: one scale, as in training, through layout-only ops too
        if node.op_type == "Relu" and node.output[0] in found:
            tensor = node.input[0]
            while True:
                found.setdefault(tensor, found[node.output[0]])
                src = made_by.get(tensor)
                if src is None or src.op_type not in LAYOUT_OPS:
                    break
                tensor = src.input[0]
    return {t: [{"scale": np.array(r.scale(), np.float32), "zero_point": np.array(0, np.int8)}] for t, r in found.items()}


def quantize_qdq(pre: Path, dest: Path, calib: CalibrationSet, method: str, exclude: tuple[str, ...] | list[str] = (),
                 only: list[str] | None = None, learned: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Symmetric int8 Q/DQ of `pre` into `dest`, calibrated by `method`; `exclude` nodes stay float,
    `only` (when given) are the only nodes quantized; `learned` (learned_overrides) fixes some scales."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra: dict[str, Any] = dict(QDQ_OPTIONS)
    overrides = {**(_mse_overrides(pre, calib, dest.parent) if method == "mse" else {}), **(learned or {})}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    quantize_static(
        str(pre), str(dest), _Reader(calib, _input_names(pre)), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
        calibrate_method=CalibrationMethod[ORT_METHOD[method]], nodes_to_exclude=list(exclude) or None,
        nodes_to_quantize=only, extra_options=extra,
    )


def _method_note(method: str) -> str:
    if method == "mse":
        return ("calibration mse: ONNX Runtime has no MSE calibrator; edgepipe computed each activation's "
                "MSE-optimal symmetric range (numpy, calibration/ranges.py) and passed it as TensorQuantOverrides")
    return f"calibration {method}: ONNX Runtime's CalibrationMethod.{ORT_METHOD[method]}"


def _outputs(path: Path, op_type: str, feeds: list[dict[str, np.ndarray]], work: Path) -> dict[str, list]:
    """Outputs of every `op_type` node of the model at `path`, per feed (qdq_loss_debug's collector)."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    aug = work / f"aug_{path.stem}.onnx"
    modify_model_output_intermediate_tensors(str(path), str(aug), op_types_for_saving=[op_type])
    acts = collect_activations(str(aug), feeds)  # type: ignore[arg-type]  # any iterable of feeds works
    aug.unlink()
    return acts


def engine_script(precision: Precision) -> str:
    """build_engine.sh for the artifact of `precision` (int8: the script edgepipe always wrote)."""
    if precision is Precision.INT8:
        return ENGINE_SCRIPT
    onnx_file, what, flags, engine = ENGINES[precision]
    return (ENGINE_SCRIPT.replace("from the Q/DQ model next to this script (explicit int8)",
                                  f"from the {onnx_file} next to this script ({what})")
            .replace("--onnx=model_qdq.onnx --int8 --fp16 --saveEngine=model_int8.engine",
                     f"--onnx={onnx_file} {flags} --saveEngine={engine}"))


def to_fp16(src: Path, dest: Path) -> None:
    """The float ONNX with float16 weights and activations, float32 input and output."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dest))


class TensorRTTarget:
    name = TargetName.TENSORRT
    version = "7"  # 7: 1-D convolutions' BatchNorm folded; 6: precisions; 5: the Q/DQ graph as written
    supports_equalize = False
    device_family = DeviceFamily.TENSORRT
    symmetric_activations = True  # TensorRT's explicit int8: symmetric s8 Q/DQ
    weight_levels = 255
    weight_levels_by_kind: dict[str, int] = {}
    per_tensor_weights: frozenset[str] = frozenset()  # quantize_static(per_channel=True): every kind per channel
    float_weights: dict[str, str] = {}
    precisions: tuple[Precision, ...] = (Precision.INT8, Precision.FP16, Precision.FLOAT)
    unsupported = {Precision.INT16X8: NO_INT16}
    host_latency_note: str | None = (
        "host latency is ONNX Runtime on this CPU running the Q/DQ model, not TensorRT on the Jetson; "
        "measure on the device with --device"
    )

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        import onnx
        import onnxruntime as ort

        start_export(self, opts, out_dir)
        src = prepared(model)
        shutil.copy2(src / "model_fp32.onnx", out_dir / "model_fp32.onnx")
        artifact = ENGINES[opts.precision][0]
        if opts.precision is Precision.INT8:
            learned = learned_overrides(src / "model_pre.onnx", calib, out_dir, opts.activation_ranges) \
                if opts.activation_ranges else None
            quantize_qdq(src / "model_pre.onnx", out_dir / artifact, calib, opts.calibration_method, opts.float_layers,
                         learned=learned)
            notes = self._int8_notes(opts)  # build adds host_latency_note for host runs
            if learned is not None:
                notes.append(note(len(learned), opts.activation_ranges))
        else:
            notes = [NOTE_FP16] if opts.precision is Precision.FP16 else []
            if opts.precision is Precision.FP16:
                to_fp16(src / "model_fp32.onnx", out_dir / artifact)
        script = out_dir / "build_engine.sh"
        script.write_text(engine_script(opts.precision))
        script.chmod(0o755)
        return plain_result(opts, artifact, "model_fp32.onnx", (artifact, "model_fp32.onnx", "build_engine.sh"),
                            {"onnx": onnx.__version__, "onnxruntime": ort.__version__}, notes)

    @staticmethod
    def _int8_notes(opts: ExportOptions) -> list[str]:
        notes = [_method_note(opts.calibration_method)]
        if opts.float_layers:
            notes.append(f"{len(opts.float_layers)} node(s) kept in float (quantize_static nodes_to_exclude): no "
                         "Q/DQ on their inputs, TensorRT runs them in fp16/fp32")
        if opts.equalize:
            notes.append("equalize: ONNX Runtime offers no equalization or bias correction here "
                         "(its SmoothQuant needs neural-compressor); ignored")
        return notes

    def probe(self, req: SensitivityRequest) -> RuntimeProbe:
        """Each compute node quantized alone (quantize_static nodes_to_quantize): SQNR of its output against
        the float model on the calibration samples (qdq_loss_debug collectors), and eval accuracy."""
        req.out_dir.mkdir(parents=True, exist_ok=True)
        return _Probe(req)


class _Probe(RuntimeProbe):
    """ONNX's LayerProbe: quantize_static of one node; SQNR from qdq_loss_debug; the Q/DQ graph as written."""

    def __init__(self, req: SensitivityRequest) -> None:
        import onnx

        super().__init__(req)
        self.pre, self.work = prepared(req.model) / "model_pre.onnx", req.out_dir
        self.feeds = _feeds(self.small, _input_names(self.pre))
        self.nodes = {n.name: n for n in onnx.load(str(self.pre)).graph.node if n.op_type in COMPUTE_OPS}

    def candidates(self) -> list[str]:
        return list(self.nodes)

    def quantized_alone(self, layer: str) -> Path:
        only = self.work / "model_only.onnx"
        quantize_qdq(self.pre, only, self.small, self.req.opts.calibration_method, only=[layer])
        return only

    def sqnr(self, layer: str, model: Any) -> float | None:
        node = self.nodes[layer]
        ref = _outputs(self.pre, node.op_type, self.feeds, self.work).get(node.output[0])
        got = _outputs(model, node.op_type, self.feeds, self.work).get(node.output[0])
        return None if ref is None or got is None else sqnr_db(ref, got)

    def session(self, model: Any) -> runner.Session:
        return OnnxRuntimeSession(model, 1, as_written=True)  # as qdq_accuracy


def qdq_accuracy(path: Path, x: np.ndarray, y: np.ndarray, metric: str = "accuracy") -> float:
    """The runner's evaluation of a Q/DQ model, its graph as written (see runner.OnnxRuntimeSession)."""
    return runner.evaluate(OnnxRuntimeSession(path, 1, as_written=True), x, y, metric)

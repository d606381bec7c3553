"""TensorRT on NVIDIA Jetson: ONNX with symmetric int8 Q/DQ (zero points 0, per-channel weights),
plus build_engine.sh that builds the engine with trtexec on the device."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from calibration import CalibrationSet

from .base import ExportOptions, ExportResult, FloatModel, TargetName

ENGINE_SCRIPT = """#!/usr/bin/env bash
# Build the TensorRT engine on the Jetson from the Q/DQ model next to this script (explicit int8).
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${TRTEXEC:-trtexec}"
command -v "$TRTEXEC" >/dev/null || TRTEXEC=/usr/src/tensorrt/bin/trtexec
"$TRTEXEC" --onnx=model_qdq.onnx --int8 --fp16 --saveEngine=model_int8.engine "$@"
"""


def to_onnx(model: FloatModel, path: Path) -> None:
    """Keras' own ONNX export when there is a Keras model; tf2onnx's saved-model path otherwise."""
    if model.keras_path is not None:
        import keras
        import numpy as np

        km = keras.saving.load_model(model.keras_path, compile=False)
        km(np.zeros((1, *model.input_shape), np.float32))  # Keras exports only models that were called
        km.export(str(path), format="onnx", verbose=False)
        return
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(model.saved_model_dir),
           "--output", str(path), "--opset", "17"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("tf2onnx failed: " + (done.stderr.strip().splitlines() or ["?"])[-1])


class _Reader:
    """onnxruntime's CalibrationDataReader over a CalibrationSet."""

    def __init__(self, calib: CalibrationSet, input_name: str) -> None:
        self._it = iter(calib.batches(1))
        self._name = input_name

    def get_next(self) -> dict | None:
        batch = next(self._it, None)
        return None if batch is None else {self._name: batch}


class TensorRTTarget:
    name = TargetName.TENSORRT
    version = "2"
    host_latency_note = (
        "host latency is ONNX Runtime on this CPU running the Q/DQ model, not TensorRT on the Jetson; "
        "measure on the device with --device"
    )

    def export(self, model: FloatModel, calib: CalibrationSet, out_dir: Path, opts: ExportOptions) -> ExportResult:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        out_dir.mkdir(parents=True, exist_ok=True)
        fp32 = out_dir / "model_fp32.onnx"
        to_onnx(model, fp32)
        pre = out_dir / "model_pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
        input_name = onnx.load(str(pre)).graph.input[0].name
        quantize_static(
            str(pre),
            str(out_dir / "model_qdq.onnx"),
            _Reader(calib, input_name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            # TensorRT: symmetric int8 (zero point 0) everywhere; it fuses float biases itself.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        pre.unlink()
        script = out_dir / "build_engine.sh"
        script.write_text(ENGINE_SCRIPT)
        script.chmod(0o755)
        return ExportResult(
            artifact="model_qdq.onnx",
            float_artifact="model_fp32.onnx",
            precision="int8",
            files=("model_qdq.onnx", "model_fp32.onnx", "build_engine.sh"),
            calibration=opts.calibration_method,
            versions={"onnx": onnx.__version__, "onnxruntime": ort.__version__},
            notes=(self.host_latency_note,),
        )

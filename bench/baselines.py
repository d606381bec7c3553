"""Each toolkit's plain default int8 conversion of the same float model: what a user gets without edgepipe.

- LiteRT: TFLiteConverter.from_saved_model, optimizations=[Optimize.DEFAULT], a representative dataset,
  nothing else (float input/output, default op sets).
- OpenVINO: openvino.convert_model(saved model) then nncf.quantize(model, nncf.Dataset(...)) with defaults,
  saved with ov.save_model defaults (the input keeps the SavedModel's dynamic batch).
- ONNX Runtime: quant_pre_process then quantize_static defaults (QDQ, u8 activations, s8 per-tensor
  weights, MinMax) on the same fp32 ONNX edgepipe's tensorrt target exported.

Converters can segfault, so every conversion runs in a child process (`python -m bench.baselines JOB`).
Results are cached like edgepipe's exports, keyed on model, calibration set and BASELINE_VERSION.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from targets.child import run_module

ROOT = Path(__file__).resolve().parents[1]
BASELINE_VERSION = "1"
ARTIFACT = {"tflite": "default_int8.tflite", "openvino": "default_int8.xml", "tensorrt": "default_int8.onnx"}


def _tflite(saved_model: Path, calib: np.ndarray, out: Path) -> None:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative() -> Iterator[list[np.ndarray]]:
        for i in range(calib.shape[0]):
            yield [calib[i : i + 1]]

    conv.representative_dataset = representative
    (out / ARTIFACT["tflite"]).write_bytes(conv.convert())


def _openvino(saved_model: Path, calib: np.ndarray, out: Path) -> None:
    import nncf
    import openvino as ov

    model = ov.convert_model(str(saved_model))
    quantized = nncf.quantize(model, nncf.Dataset([calib[i : i + 1] for i in range(calib.shape[0])]))
    ov.save_model(quantized, str(out / ARTIFACT["openvino"]))


def _onnxruntime(fp32_onnx: Path, calib: np.ndarray, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out / "pre.onnx"
    quant_pre_process(str(fp32_onnx), str(pre))
    name = onnx.load(str(pre)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib[i : i + 1] for i in range(calib.shape[0]))

        def get_next(self) -> dict | None:
            x = next(self.it, None)
            return None if x is None else {name: x}

    quantize_static(str(pre), str(out / ARTIFACT["tensorrt"]), Reader())
    pre.unlink()


def convert(target: str, source: Path, calib: np.ndarray, out: Path) -> Path:
    """Default int8 of `source` (a SavedModel dir, or the fp32 .onnx for tensorrt) into `out`; its path."""
    out.mkdir(parents=True, exist_ok=True)
    {"tflite": _tflite, "openvino": _openvino, "tensorrt": _onnxruntime}[target](source, calib, out)
    return out / ARTIFACT[target]


def convert_in_child(target: str, source: Path, calib: np.ndarray, out: Path, timeout_s: float = 1800) -> Path:
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-") as tmp:
        np.save(Path(tmp) / "calib.npy", calib.astype(np.float32))
        job = {"target": target, "source": str(source), "calib": str(Path(tmp) / "calib.npy"), "out": str(out)}
        done = run_module("bench.baselines", [json.dumps(job)], timeout_s=timeout_s, path=[ROOT], cwd=ROOT)
    if done.returncode != 0:
        why = f"crashed (signal {-done.returncode})" if done.returncode < 0 else \
            (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"{target} default int8 conversion failed: {why}")
    return out / ARTIFACT[target]


if __name__ == "__main__":
    _job = json.loads(sys.argv[1])
    convert(_job["target"], Path(_job["source"]), np.load(_job["calib"]), Path(_job["out"]))

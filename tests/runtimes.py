"""An artifact's top-1 accuracy computed by its runtime's own Python API, one sample at a time, without
targets.runner: the tests' independent check of a number the build reported.

LiteRT: `ai_edge_litert.interpreter.Interpreter` (an int8 input quantized with the input's scale and zero
point); ONNX: `onnxruntime.InferenceSession` with graph optimizations ORT_DISABLE_ALL (the Q/DQ graph as
written, as TensorRT computes it); OpenVINO: `openvino.Core().compile_model` on CPU. One input, one output."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _litert(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = inp["quantization"]
    rows = []
    for k in range(len(x)):
        sample = x[k : k + 1].astype(np.float32)
        if inp["dtype"] != np.float32:
            info = np.iinfo(inp["dtype"])
            sample = np.clip(np.round(sample / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], sample)
        interp.invoke()
        rows.append(interp.get_tensor(out["index"]).reshape(-1).astype(np.float32))  # argmax: scale > 0
    return np.stack(rows)


def _onnx(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x[k : k + 1].astype(np.float32)})[0].reshape(-1) for k in range(len(x))])


def _openvino(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": str(threads), "INFERENCE_PRECISION_HINT": "f32"}  # as OpenVINOSession
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    rows = []
    for k in range(len(x)):
        request.infer([np.ascontiguousarray(x[k : k + 1], dtype=np.float32)])
        rows.append(np.asarray(request.get_output_tensor(0).data, dtype=np.float32).reshape(-1).copy())
    return np.stack(rows)


RUNTIMES = {".tflite": _litert, ".onnx": _onnx, ".xml": _openvino}


def outputs(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """The artifact's output for each sample of x, (N, classes)."""
    return RUNTIMES[Path(path).suffix](Path(path), np.asarray(x), threads)


def accuracy(path: Path, x: np.ndarray, y: np.ndarray, threads: int = 1) -> float:
    """Top-1 accuracy of the artifact on (x, y)."""
    return float(np.mean(outputs(path, x, threads).argmax(axis=1) == np.asarray(y).reshape(-1)))


def eval_set(npz: Path) -> tuple[np.ndarray, np.ndarray]:
    """A run's data/eval.npz: (x, y)."""
    with np.load(npz) as d:
        return d["x"].astype(np.float32), d["y"]

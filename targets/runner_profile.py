"""Device-side per-op profiles, each from the runtime's own profiler (copied next to runner.py, numpy only):

- OpenVINO: the CPU plugin's per-layer performance counters (PERF_COUNT); the precision each layer ran in is
  the kernel's (exec_type "brgconv_avx512_I8" ran in int8, "..._bf16" in bfloat16);
- ONNX Runtime: its profiler's per-node kernel times (SessionOptions.enable_profiling), the precision from the
  node's input and output tensor types (QLinearConv on uint8 ran in int8; a Conv on float fell back to float);
- LiteRT: the Python Interpreter of ai-edge-litert and tflite-runtime has no op profiler (TFLite's lives in the
  C++ benchmark_model tool, --enable_op_profiling): no times, said so, and the graph's ops with the precision
  of their tensors.

Each profile: {"available", "reason", "tool", "runs", "ops": [{"name", "type", "precision", "ms"}],
"total_ms"}; "ms" is per inference: the op's median over `runs` inferences after a few untimed ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from .runner_sessions import feed_list, plain_name
else:  # run as a script on a device: the siblings sit next to this file
    from runner_sessions import feed_list, plain_name  # type: ignore[no-redef]

WARMUP = 5
_INT8 = ("i8", "u8", "int8", "uint8")
_KERNEL_PRECISION = {"i8": "int8", "u8": "int8", "f32": "float32", "bf16": "bfloat16", "f16": "float16",
                     "i32": "int32", "i64": "int64", "fp32": "float32", "fp16": "float16", "i16": "int16",
                     "u16": "int16", "boolean": "bool", "u1": "bool"}


def unavailable(tool: str, reason: str, ops: list | None = None) -> dict:
    return {"available": False, "reason": reason, "tool": tool, "runs": 0, "ops": ops or [], "total_ms": None,
            "profiled_run_ms": None}


def profile(artifact: Path, threads: int, x: Any, runs: int = 100) -> dict:
    """The artifact's per-op profile from its runtime (see the module docstring); never raises: a profiler that
    fails is reported as unavailable, with why."""
    suffix = Path(artifact).suffix.lower()
    try:
        if suffix == ".xml":
            return openvino_profile(artifact, threads, x, runs)
        if suffix == ".onnx":
            return onnxruntime_profile(artifact, threads, x, runs)
        return litert_profile(artifact, threads)
    except Exception as err:
        return unavailable(suffix.lstrip("."), f"the profiler failed: {type(err).__name__}: {err}")


def kernel_precision(exec_type: str) -> str:
    """OpenVINO's exec_type suffix as a precision: "brgconv_avx512_I8" -> int8, "jit_avx512_bf16" -> bfloat16."""
    tail = exec_type.rsplit("_", 1)[-1].lower() if "_" in exec_type else exec_type.lower()
    return _KERNEL_PRECISION.get(tail, "-")


def openvino_profile(artifact: Path, threads: int, x: Any, runs: int) -> dict:
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads),
              "PERF_COUNT": "YES"}
    compiled = ov.Core().compile_model(str(artifact), "CPU", config)
    request = compiled.create_infer_request()
    names = [plain_name(p.get_any_name()) for p in compiled.inputs]
    feed = feed_list(x, names)
    for _ in range(WARMUP):
        request.infer(feed)
    total: dict = {}
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(feed)
        walls.append((time.perf_counter() - t0) * 1000.0)
        for info in request.get_profiling_info():
            if str(info.status).rsplit(".", 1)[-1] != "EXECUTED":
                continue
            key = info.node_name
            entry = total.setdefault(key, {"name": key, "type": info.node_type, "kernel": info.exec_type,
                                           "precision": kernel_precision(info.exec_type), "times": []})
            entry["times"].append(info.real_time.total_seconds() * 1000.0)
    return _finish("openvino " + ov.get_version().split("-")[0] + " performance counters", total, runs, walls)


def _finish(tool: str, total: dict, runs: int, walls: list) -> dict:
    """The profile: each op's median ms over the runs it ran in (a median, as the latency's: a run preempted
    half-way must not lend one op its wait); `profiled_run_ms` the median whole inference with the profiler on
    (against the latency measured without it, it says how much the profiler itself costs)."""
    ops = []
    for entry in total.values():
        times = entry.pop("times")
        entry["ms"] = float(np.median(times)) * len(times) / max(runs, len(times))  # an op not run every time
        ops.append(entry)
    return {"available": True, "reason": None, "tool": tool, "runs": runs, "ops": ops,
            "total_ms": float(sum(o["ms"] for o in ops)), "profiled_run_ms": float(np.median(walls)) if walls else None}


def tensor_precision(dtype: str) -> str:
    d = dtype.lower()
    if d in _INT8 or d.endswith("int8"):
        return "int8"
    return {"float": "float32", "float32": "float32", "float16": "float16", "bfloat16": "bfloat16",
            "int16": "int16", "int32": "int32", "int64": "int64", "double": "float64"}.get(d, d)


def node_precision(inputs: list, outputs: list) -> str:
    """What an ONNX Runtime node ran in, from its first input's and first output's element types: int8 when
    both are 8-bit, float32 when both are float, "float32->int8" for a quantize, "int8->float32" for a dequantize."""
    first_in = tensor_precision(next(iter(inputs[0]), "")) if inputs else "-"
    first_out = tensor_precision(next(iter(outputs[0]), "")) if outputs else "-"
    if first_in == first_out or "-" in (first_in, first_out):
        return first_in if first_in != "-" else first_out
    if "int8" in (first_in, first_out):
        return f"{first_in}->{first_out}"
    return first_in


def onnxruntime_profile(artifact: Path, threads: int, x: Any, runs: int) -> dict:
    import onnxruntime as ort

    folder = tempfile.mkdtemp(prefix="edgepipe-ortprof-")
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(folder, "profile")
        sess = ort.InferenceSession(str(artifact), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        values = feed_list(x, [plain_name(n) for n in names])
        feed = {n: np.asarray(v, dtype=np.float32) for n, v in zip(names, values)}  # noqa: B905
        walls = []
        for i in range(WARMUP + runs):
            t0 = time.perf_counter()
            sess.run(None, feed)
            if i >= WARMUP:
                walls.append((time.perf_counter() - t0) * 1000.0)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return _finish("onnxruntime " + ort.__version__ + " profiler", ort_ops(events, runs), runs, walls)


def ort_ops(events: list, runs: int) -> dict:
    """Per-node kernel times of the last `runs` model runs in an ONNX Runtime profile (the warm-up runs before
    them are left out), keyed by node name."""
    model_runs = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events if e.get("name") == "model_run")
    windows = model_runs[-runs:] if runs else []
    start = windows[0][0] if windows else 0
    total: dict = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e.get("ts", 0) < start:
            continue
        args = e.get("args", {})
        name = e["name"][: -len("_kernel_time")]
        entry = total.setdefault(name, {"name": name, "type": args.get("op_name", "?"),
                                        "kernel": args.get("provider", ""),
                                        "precision": node_precision(args.get("input_type_shape", []),
                                                                    args.get("output_type_shape", [])),
                                        "times": []})
        entry["times"].append(float(e.get("dur", 0)) / 1000.0)
    return total


def litert_profile(artifact: Path, threads: int) -> dict:
    """No times (see the module docstring): the reason, and each op of the graph with its tensors' precision."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        runtime = "ai-edge-litert"
    except ImportError:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

        runtime = "tflite-runtime"
    interp = Interpreter(model_path=str(artifact), num_threads=threads)
    interp.allocate_tensors()
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interp.get_tensor_details()}
    ops = []
    for op in interp._get_ops_details():
        if op["op_name"] == "DELEGATE":  # XNNPACK's node over the ops it took; they are listed themselves
            continue
        inputs = [dtypes.get(int(i), "") for i in op["inputs"] if int(i) >= 0]
        ops.append({"name": "{}#{}".format(op["op_name"], op["index"]), "type": op["op_name"],
                    "precision": tensor_precision(inputs[0]) if inputs else "-", "ms": None})
    reason = (f"{runtime}'s Python Interpreter exposes no op profiler (TFLite's op profiling is the C++ benchmark_model "
              "tool's --enable_op_profiling): no per-op times; the ops are listed with the precision of their "
              "tensors")
    return unavailable(runtime, reason, ops)

"""Device-side per-op profiles, each from the runtime's own profiler (copied next to runner.py, numpy only):

- OpenVINO: the CPU plugin's per-layer performance counters (PERF_COUNT), compiled with the config every other
  OpenVINO session uses (runner_sessions.openvino_config: f32 precision hint); the precision each layer ran in
  is the kernel's (exec_type "brgconv_avx512_I8" ran in int8, "..._bf16" in bfloat16);
- ONNX Runtime: its profiler's per-node kernel times (SessionOptions.enable_profiling), the precision from the
  node's input and output tensor types (QLinearConv on uint8 ran in int8; a Conv on float fell back to float);
- LiteRT: the Python API of ai-edge-litert has no op profiler, its libLiteRt.so has one (LiteRT's C API, driven
  by runner_litert_prof.py): XNNPACK's operators, each with the data types XNNPACK names it by (the precision),
  and the TFLite ops XNNPACK did not take, with their tensors' precision. Where the runtime has no such library
  (tflite-runtime), no times, said why, and the graph's ops with the precision of their tensors.

Each profile: {"available", "reason", "tool", "runs", "ops": [{"name", "type", "kernel", "precision", "ms"}],
"total_ms" (the ops' sum), "profiled_run_ms" (the median profiled inference, timed around the runtime's call),
"runtime_ms" and "runtime_ms_source" (the median profiled inference by the runtime's own clock: OpenVINO's
InferRequest.latency, ONNX Runtime's model_run events, LiteRT's Invoke events), "runtime_unprofiled_ms"
(OpenVINO's InferRequest.latency with the counters off; None elsewhere: the others time a run only in their
profiler), "granularity" ("op", or "delegate node" where a delegate's node is timed as one), "note"}; "ms" is
per inference: the op's median over `runs` inferences after a few untimed ones.
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
    from . import runner_litert_prof as litert_capi
    from .runner_sessions import LiteRTSession, feed_list, openvino_config, plain_name, stderr_filtered
else:  # run as a script on a device: the siblings sit next to this file
    import runner_litert_prof as litert_capi  # type: ignore[no-redef]
    from runner_sessions import (  # type: ignore[no-redef]
        LiteRTSession,
        feed_list,
        openvino_config,
        plain_name,
        stderr_filtered,
    )

WARMUP = 5
_INT8 = ("i8", "u8", "int8", "uint8")
_XNNPACK_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "QS8": "int8", "QU8": "int8", "S8": "int8",
                  "U8": "int8", "QC8": "int8", "QC8W": "int8", "QD8": "int8", "QDU8": "int8", "QS8W": "int8",
                  "QC4W": "int4", "QB4W": "int4", "QP8": "int8", "S32": "int32", "QS32": "int32", "S16": "int16"}
_CONVERTS = {"float32": "float32->int8", "int8": "int8->float32"}
_KERNEL_PRECISION = {"i8": "int8", "u8": "int8", "f32": "float32", "bf16": "bfloat16", "f16": "float16",
                     "i32": "int32", "i64": "int64", "fp32": "float32", "fp16": "float16", "i16": "int16",
                     "u16": "int16", "boolean": "bool", "u1": "bool"}


def unavailable(tool: str, reason: str, ops: list | None = None) -> dict:
    return {"available": False, "reason": reason, "tool": tool, "runs": 0, "ops": ops or [], "total_ms": None,
            "profiled_run_ms": None, "runtime_ms": None, "runtime_ms_source": None, "runtime_unprofiled_ms": None,
            "granularity": None, "note": None}


def profile(artifact: Path, threads: int, x: Any, runs: int = 100) -> dict:
    """The artifact's per-op profile from its runtime (see the module docstring); never raises: a profiler that
    fails is reported as unavailable, with why."""
    suffix = Path(artifact).suffix.lower()
    try:
        if suffix == ".xml":
            return openvino_profile(artifact, threads, x, runs)
        if suffix == ".onnx":
            return onnxruntime_profile(artifact, threads, x, runs)
        return litert_profile(artifact, threads, x, runs)
    except Exception as err:
        return unavailable(suffix.lstrip("."), f"the profiler failed: {type(err).__name__}: {err}")


def kernel_precision(exec_type: str) -> str:
    """OpenVINO's exec_type suffix as a precision: "brgconv_avx512_I8" -> int8, "jit_avx512_bf16" -> bfloat16."""
    tail = exec_type.rsplit("_", 1)[-1].lower() if "_" in exec_type else exec_type.lower()
    return _KERNEL_PRECISION.get(tail, "-")


def openvino_profile(artifact: Path, threads: int, x: Any, runs: int) -> dict:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(artifact), "CPU", dict(openvino_config(threads), PERF_COUNT="YES"))
    request = compiled.create_infer_request()
    names = [plain_name(p.get_any_name()) for p in compiled.inputs]
    feed = feed_list(x, names)
    for _ in range(WARMUP):
        request.infer(feed)
    total: dict = {}
    walls, latencies = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(feed)
        walls.append((time.perf_counter() - t0) * 1000.0)
        latencies.append(request.latency)
        for info in request.get_profiling_info():
            if str(info.status).rsplit(".", 1)[-1] != "EXECUTED":
                continue
            key = info.node_name
            entry = total.setdefault(key, {"name": key, "type": info.node_type, "kernel": info.exec_type,
                                           "precision": kernel_precision(info.exec_type), "times": []})
            entry["times"].append(info.real_time.total_seconds() * 1000.0)
    prof = _finish("openvino " + ov.get_version().split("-")[0] + " performance counters", total, runs, walls,
                   ("InferRequest.latency", latencies))
    prof["runtime_unprofiled_ms"] = openvino_latency(core.compile_model(str(artifact), "CPU", openvino_config(threads)),
                                                     feed, runs)
    return prof


def openvino_latency(compiled: Any, feed: list, runs: int) -> float:
    """The median of OpenVINO's own `InferRequest.latency` over `runs` inferences (after WARMUP): the C++
    infer call alone, without the Python binding's per-call cost."""
    request = compiled.create_infer_request()
    for _ in range(WARMUP):
        request.infer(feed)
    found = []
    for _ in range(runs):
        request.infer(feed)
        found.append(request.latency)
    return float(np.median(found))


def _finish(tool: str, total: dict, runs: int, walls: list, runtime: tuple) -> dict:
    """The profile: each op's median ms over the runs it ran in (a median, as the latency's: a run preempted
    half-way must not lend one op its wait); `profiled_run_ms` the median whole inference with the profiler on,
    timed here around the runtime's call (against the latency measured without it, it says how much the profiler
    itself costs); `runtime_ms` the median whole inference in the same profiled runs by the runtime's own clock
    (`runtime` = (where that number comes from, one time per run in ms)), which is not the ops' sum: what the
    runtime did outside its ops (scheduling, its profiler's bookkeeping) is in it, and only there."""
    ops = []
    for entry in total.values():
        times = entry.pop("times")
        entry["ms"] = float(np.median(times)) * len(times) / max(runs, len(times))  # an op not run every time
        ops.append(entry)
    source, own = runtime
    return {"available": True, "reason": None, "tool": tool, "runs": runs, "ops": ops,
            "total_ms": float(sum(o["ms"] for o in ops)), "profiled_run_ms": float(np.median(walls)) if walls else None,
            "runtime_ms": float(np.median(own)) if own else None, "runtime_ms_source": source if own else None,
            "runtime_unprofiled_ms": None, "granularity": "op", "note": None}


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
    model_runs = [float(e.get("dur", 0)) / 1000.0 for e in events if e.get("name") == "model_run"]
    return _finish("onnxruntime " + ort.__version__ + " profiler", ort_ops(events, runs), runs, walls,
                   ("model_run events", model_runs[-runs:] if runs else []))


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


def litert_profile(artifact: Path, threads: int, x: Any, runs: int) -> dict:
    """LiteRT's own op profiler through its C API (runner_litert_prof.py), where the installed runtime ships it;
    elsewhere no times, said why, and each op of the graph with its tensors' precision."""
    session = LiteRTSession(Path(artifact), threads)
    runtime = session.runtime.split(" ")[0]
    graph = graph_ops(session.interp)
    lib = litert_capi.library()
    if isinstance(lib, str):
        return unavailable(runtime, f"no op profiler: {runtime}'s Python API has none, and {lib}; no per-op times, "
                           "the ops are listed with the precision of their tensors", list(graph.values()))
    with stderr_filtered():  # LiteRT's C API logs its environment and accelerators at INFO
        model = litert_capi.ProfiledModel(lib, Path(artifact), threads)
        try:
            for i, data in enumerate(litert_inputs(session, x, model.input_names)):
                model.write_input(i, data)
            events, walls = model.run(WARMUP, runs)
        finally:
            model.close()
    total, invokes, granularity = litert_ops(events, graph, tensor_precision(np.dtype(session.inp["dtype"]).name))
    prof = _finish(f"{session.runtime} LiteRT C API profiler (libLiteRt.so, CompiledModel on the CPU accelerator)",
                   total, runs, walls, ("Invoke events", invokes[-runs:]))
    prof["granularity"] = granularity
    xnnpack = sum(1 for o in prof["ops"] if str(o.get("kernel", "")).startswith("XNNPACK"))
    prof["note"] = (f"timed in a LiteRT CompiledModel (TFLite's kernels and XNNPACK, as in the Interpreter the "
                    f"latency is measured with); TFLite and XNNPACK time in whole microseconds, and XNNPACK truncates "
                    f"each operator's time: the {xnnpack} XNNPACK operators' sum is short by up to {xnnpack} µs. "
                    "XNNPACK's operators are its own (fused, with its converts), not the .tflite's ops one to one, "
                    "numbered in the order they ran; one XNNPACK names without a data type (a reshape, a mean) is "
                    "given the type the operator before it produced, an untyped Convert goes from that type to the "
                    "other of float32 and int8")
    return prof


def litert_inputs(session: Any, x: Any, names: list) -> list:
    """x as the bytes of each input the C API's signature lists (`names`), quantized as the Interpreter's are."""
    values = session.prepare(x)
    values = values if isinstance(values, list) else [values]
    by_name = dict(zip(session.input_names, values))  # noqa: B905
    if len(values) == 1:
        return [np.ascontiguousarray(values[0]).tobytes()]
    return [np.ascontiguousarray(by_name[plain_name(n)]).tobytes() for n in names]


def graph_ops(interp: Any) -> dict:
    """The .tflite's ops by node index, with the precision of their first input tensor (XNNPACK's delegate node,
    over the ops it took, is left out: they are listed themselves)."""
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interp.get_tensor_details()}
    ops = {}
    for op in interp._get_ops_details():
        if op["op_name"] == "DELEGATE":
            continue
        inputs = [dtypes.get(int(i), "") for i in op["inputs"] if int(i) >= 0]
        ops[int(op["index"])] = {"name": "{}#{}".format(op["op_name"], op["index"]), "type": op["op_name"],
                                 "kernel": "TFLite", "precision": tensor_precision(inputs[0]) if inputs else "-",
                                 "ms": None}
    return ops


def litert_ops(events: list, graph: dict, first: str = "-") -> tuple[dict, list, str]:
    """LiteRT profile events as per-op times, the "Invoke" events' times (the interpreter's whole inference) and
    the granularity: "op", or "delegate node" where a delegate reported no operators of its own and its node is
    timed as one. XNNPACK's operators are keyed by their position in the inference (XNNPACK numbers them per
    delegate node). One whose name gives no data type (a reshape, a mean: XNNPACK runs it in its input's type) is
    given the type the op before it produced (`first`, the model input's, for the first); an untyped Convert (a
    quantize or a dequantize) goes from that type to the other of float32 and int8."""
    total: dict = {}
    invokes: list = []
    run: dict[str, Any] = {"ops": 0, "xnnpack": 0, "before": first, "end": 0}
    delegate_nodes = False
    for e in events:
        if e.event_type == 1 and e.tag == "Invoke":  # DEFAULT: one per inference, its operators follow it
            if e.start_us >= run["end"]:  # not a control-flow subgraph's, inside the inference's
                invokes.append(e.elapsed_us / 1000.0)
                run = {"ops": 0, "xnnpack": 0, "before": first, "end": e.start_us + e.elapsed_us}
            continue
        if e.event_type in (litert_capi.DELEGATE_OPERATOR, litert_capi.DELEGATE_PROFILED_OPERATOR):
            entry = _xnnpack_op(e.tag, run)
        elif e.event_type == litert_capi.OPERATOR:
            node = graph.get(e.metadata1)
            delegate_nodes |= node is None
            run["before"] = node["precision"] if node else "-"
            entry = {k: v for k, v in node.items() if k != "ms"} if node else {
                "name": f"{e.tag}#{e.metadata1}", "type": e.tag, "kernel": "delegate node", "precision": "-"}
        else:
            continue
        run["ops"] += 1
        slot = total.setdefault((run["ops"], entry["name"]), dict(entry, times=[]))
        slot["times"].append(e.elapsed_us / 1000.0)
    return total, invokes, "delegate node" if delegate_nodes else "op"


def _xnnpack_op(tag: str, run: dict) -> dict:
    kind, precision = tag.split(" (")[0], xnnpack_precision(tag)
    if precision == "-" and kind == "Convert":  # XNNPACK's untyped Convert is a quantize or a dequantize
        precision = _CONVERTS.get(run["before"], "-")
    elif precision == "-":
        precision = run["before"]
    run["before"] = precision.split("->")[-1]
    entry = {"name": f"{kind}#{run['xnnpack']}", "type": kind, "kernel": "XNNPACK: " + tag, "precision": precision}
    run["xnnpack"] += 1
    return entry


def xnnpack_precision(name: str) -> str:
    """The precision of an XNNPACK operator from the data types in its name: "Convolution (NHWC, QC8) IGEMM" ran
    in int8, "Convert (NC, F32, QS8)" is "float32->int8"; "-" where the name gives none ("Static Reshape (NC)")."""
    inside = name.partition("(")[2].partition(")")[0]
    found = [_XNNPACK_TYPES[t] for t in (p.strip().upper() for p in inside.split(",")) if t in _XNNPACK_TYPES]
    if not found:
        return "-"
    return found[0] if found[0] == found[-1] else f"{found[0]}->{found[-1]}"

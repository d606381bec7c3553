"""Device-side TensorRT path of runner.py (`runner.py model.onnx --tensorrt` on a Jetson).

Self-contained like runner.py (Python >= 3.8, stdlib + numpy; the `tensorrt` module only if present) and
copied next to it. The engine is built on the device: `build_engine.sh` when it sits next to
`model_qdq.onnx` (what the tensorrt target writes), else `trtexec --onnx=... --int8 --fp16`. Latency is
trtexec's own (`--exportTimes` per-iteration host latency, else its `Latency: min = ...` summary line).
Accuracy needs the TensorRT Python API; without it accuracy is null and `notes` says why.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")


def _cudart() -> ctypes.CDLL:
    for lib in ["libcudart.so"] + sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"), reverse=True):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        cuda.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        cuda.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return cuda
    raise RuntimeError("libcudart.so not found")


class TensorRTSession:
    """A serialized engine run with the TensorRT Python API; device buffers through libcudart (ctypes)."""

    def __init__(self, engine_path: Path, base: Any) -> None:
        import tensorrt as trt

        self.base = base  # runner.py: feed_list and output_order map the engine's tensor names
        self.trt, self.runtime, self.cuda = trt, "tensorrt " + trt.__version__, _cudart()
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self.ctx = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in self.names]
        self.buffers: dict[str, tuple[int, int]] = {}

    def _ptr(self, name: str, nbytes: int) -> int:
        if self.buffers.get(name, (0, -1))[1] < nbytes:
            p = ctypes.c_void_p()
            if self.cuda.cudaMalloc(ctypes.byref(p), max(1, nbytes)) != 0:
                raise RuntimeError("cudaMalloc failed")
            self.buffers[name] = (int(p.value or 0), nbytes)
        return self.buffers[name][0]

    def _copy(self, dst: int, src: int, nbytes: int, kind: int) -> None:  # kind 1: host->device, 2: back
        if self.cuda.cudaMemcpy(dst, src, nbytes, kind) != 0:
            raise RuntimeError("cudaMemcpy failed")

    def run(self, x: Any) -> np.ndarray:
        return self.run_all(x)[0]

    def exact(self) -> TensorRTSession:
        return self

    def run_all(self, x: Any) -> list:
        """Every output, in the model's order (runner_sessions.output_order); x an array or {input name: array}."""
        sessions, trt = self.base, self.trt
        in_names = [n for n, i in zip(self.names, self.inputs) if i]  # noqa: B905 (Python 3.8 on devices)
        fed = dict(zip(in_names, sessions.feed_list(x, in_names)))  # noqa: B905
        feeds = {}
        for name in in_names:
            feeds[name] = np.ascontiguousarray(fed[name], dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self.ctx.set_input_shape(name, feeds[name].shape)
        outs, bindings = [], []
        for name, is_input in zip(self.names, self.inputs):  # noqa: B905 (Python 3.8 on devices)
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            arr = feeds[name] if is_input else np.empty(tuple(self.ctx.get_tensor_shape(name)), dtype=dtype)
            bindings.append(self._ptr(name, arr.nbytes))
            if is_input:
                self._copy(bindings[-1], arr.ctypes.data, arr.nbytes, 1)
            else:
                outs.append((arr, bindings[-1]))
        if not self.ctx.execute_v2(bindings):
            raise RuntimeError("TensorRT execute_v2 failed")
        for arr, ptr in outs:
            self._copy(arr.ctypes.data, ptr, arr.nbytes, 2)
        out_names = [n for n, i in zip(self.names, self.inputs) if not i]  # noqa: B905
        return [outs[i][0].astype(np.float32) for i in sessions.output_order(out_names)]



def _call(cmd: list[str], cwd: Path, children: list) -> str:
    proc = subprocess.Popen(cmd, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children.append(proc)
    out = proc.communicate()[0]
    if proc.returncode != 0:
        tail = " | ".join([ln.strip() for ln in out.splitlines() if ln.strip()][-3:])
        raise RuntimeError(
            f"{Path(cmd[-1] if cmd[0] == 'env' else cmd[0]).name} failed (exit {proc.returncode}): {tail}"
        )
    return out


def trtexec_latency(text: str, warmup: int) -> dict:
    """Stats from trtexec's `Latency: min = .. ms, max = .., mean = .., median = .., percentile(90%) = ..`."""
    line = next((ln for ln in text.splitlines() if "Latency: min =" in ln), None)
    if line is None:
        raise RuntimeError("no 'Latency: min = ...' line in trtexec's output")
    v = {k: float(x) for k, x in re.findall(r"(\w+(?:\(\d+%\))?) = ([0-9.eE+-]+) ms", line)}
    runs = re.search(r"(\d+) iterations", text)
    return {
        "median": v["median"],
        "p90": v.get("percentile(90%)", v["max"]),
        "p99": v.get("percentile(99%)", v["max"]),
        "mean": v["mean"],
        "std": None,  # trtexec's summary has no standard deviation
        "min": v["min"],
        "iterations": int(runs.group(1)) if runs else 0,
        "warmup": int(warmup),
        "threads": 1,
    }


def find_trtexec() -> str:
    found = shutil.which("trtexec") or next((p for p in TRTEXEC_PATHS if os.path.exists(p)), None)
    if found is None:
        raise RuntimeError(
            "trtexec not found on this device: install TensorRT (JetPack) or put trtexec on PATH "
            "(it is usually /usr/src/tensorrt/bin/trtexec)"
        )
    return found


def _script_engine(folder: Path, onnx_name: str) -> str | None:
    """The engine file build_engine.sh next to the artifact writes, when that script builds this artifact."""
    script = folder / "build_engine.sh"
    text = script.read_text() if script.exists() else ""
    found = re.search(r"--saveEngine=(\S+)", text)
    return found.group(1) if found and ("--onnx=" + onnx_name + " ") in text else None


def run_tensorrt(
    artifact: Path, eval_path: Path | None, warmup: int, iterations: int, base: ModuleType, metric: str = "accuracy"
) -> dict:
    """Build the engine, time it with trtexec, evaluate it with the Python API; `base` is runner.py."""
    if artifact.suffix.lower() != ".onnx":
        raise ValueError(f"--tensorrt needs an .onnx artifact, got {artifact.name!r}")
    if not artifact.exists():
        raise FileNotFoundError(str(artifact))
    trtexec, folder, children = find_trtexec(), artifact.resolve().parent, base.CHILDREN
    script = _script_engine(folder, artifact.name)
    if script is not None:  # edgepipe's build_engine.sh for this artifact (its precision's flags)
        engine = folder / script
        build = _call(
            ["env", "TRTEXEC=" + trtexec, "bash", str(folder / "build_engine.sh")], folder, children
        )
    else:
        engine = folder / (artifact.stem + ".engine")
        cmd = [trtexec, "--onnx=" + str(artifact), "--int8", "--fp16", "--saveEngine=" + str(engine)]
        build = _call(cmd, folder, children)
    times = folder / (artifact.stem + ".times.json")
    cmd = [trtexec, "--loadEngine=" + str(engine), f"--iterations={iterations}", "--duration=0",
           "--warmUp=200", "--exportTimes=" + str(times)]  # fmt: skip
    out = _call(cmd, folder, children)
    trace = json.loads(times.read_text()) if times.exists() else []
    # host latency (in + compute + out) per inference; older trtexec versions also list the warm-up runs first
    samples = [float(t["latencyMs"]) for t in trace if isinstance(t, dict) and "latencyMs" in t][-iterations:]
    version = re.search(r"TensorRT version: ([0-9.]+)", build + out)
    result: dict[str, Any] = {
        "runtime": "tensorrt " + (version.group(1) if version else "(trtexec)"),
        "accuracy": None,
        "samples": 0,
        "notes": ["latency: trtexec host latency per inference; warm-up is trtexec's 200 ms, not iterations"],
    }
    result["latency_ms"] = base.latency_stats(samples, warmup, 1) if samples else trtexec_latency(out, warmup)
    result["latency_samples_ms"] = samples
    if eval_path is not None:
        _evaluate(result, engine, eval_path, base, metric)
    result["peak_memory_kb"] = max(base.peak_memory_kb() or 0, _children_peak_kb()) or None
    result["cpu"] = base.cpu_info()
    return result


def _evaluate(result: dict, engine: Path, eval_path: Path, base: ModuleType, metric: str) -> None:
    """The metric (and its per-sample statistics) of the engine on the eval set, into `result`."""
    ev = base.EvalSet(eval_path)
    try:
        outputs = base.outputs_all(TensorRTSession(engine, base).exact(), ev.x)[ev.output_index]
        result["accuracy"], stats = base.runner_metrics.score_and_per_sample(  # as base.evaluate, and per sample
            outputs, ev.y, metric, None if isinstance(ev.x, dict) else ev.x
        )
        if stats is not None:
            result["per_sample"] = stats.tolist()
        result["samples"] = ev.samples
    except Exception as err:  # no tensorrt module / libcudart: latency still counts
        result["notes"].append(f"accuracy not measured: TensorRT Python API unusable ({type(err).__name__}: {err})")


def _children_peak_kb() -> int:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # trtexec
    except Exception:
        return 0

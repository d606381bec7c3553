"""Device-side runner: latency, peak memory and accuracy of one artifact in its own runtime.

Self-contained on purpose (Python >= 3.8, numpy and the artifact's runtime only): the SSH transport
copies this file to the device and runs it there; the host imports the same functions.

    python runner.py ARTIFACT [--eval EVAL.npz] [--warmup N] [--iterations N] [--threads N]
                     [--tensorrt] [--exit-on-eof]

prints one JSON object on stdout. `--tensorrt` (a .onnx on a Jetson) builds the engine with trtexec and
times it with trtexec; `--exit-on-eof` ends the run when stdin closes (the SSH connection dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class Session:
    """One loaded artifact: `run(x)` takes a float32 batch of one and returns float32 outputs."""

    runtime = "unknown"

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """The input in the artifact's own format (an int8 model gets int8), made once before timing."""
        return x

    def invoke(self, native: np.ndarray) -> np.ndarray:
        """The timed call: what an application that feeds the model its own format pays."""
        return self.run(native)

    def exact(self) -> Session:
        """The session that accuracy is measured with: this one, unless the runtime rewrites the graph into
        kernels whose numbers depend on the host CPU (see OnnxRuntimeSession)."""
        return self

    def evaluation(self) -> str:
        """How accuracy is computed, for the report."""
        return self.runtime


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


_LITERT_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate",)


class stderr_filtered:
    """While open, the process's stderr (fd 2, where LiteRT's C++ prints) goes to a file; on close every line
    but LiteRT's "INFO: Created ... delegate" goes back to stderr. That line is printed once per interpreter
    and would show through --quiet and into every build log; errors still come through."""

    def __enter__(self) -> None:
        import tempfile

        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        kept = [ln for ln in self._file.read().decode(errors="replace").splitlines(keepends=True)
                if not ln.startswith(_LITERT_NOISE)]
        self._file.close()
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class LiteRTSession(Session):
    def __init__(self, path: Path, threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter

            self.runtime = "ai-edge-litert " + _version("ai-edge-litert")
        except ImportError:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

            self.runtime = "tflite-runtime " + _version("tflite-runtime")
        with stderr_filtered():
            self.interp = Interpreter(model_path=str(path), num_threads=threads)
            self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]

    def prepare(self, x: np.ndarray) -> np.ndarray:
        d = self.inp
        if d["dtype"] == np.float32:
            return x
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])

    def invoke(self, native: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.inp["index"], native)
        self.interp.invoke()
        return self.interp.get_tensor(self.out["index"])

    def run(self, x: np.ndarray) -> np.ndarray:
        y = self.invoke(self.prepare(x))
        if self.out["dtype"] != np.float32:
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


class OpenVINOSession(Session):
    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        self.runtime = "openvino " + ov.get_version().split("-")[0]
        core = ov.Core()
        cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads)}
        self.compiled = core.compile_model(str(path), "CPU", cfg)
        self.request = self.compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        self.request.infer([x])
        return np.asarray(self.request.get_output_tensor(0).data, dtype=np.float32).copy()

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Bind the input tensor once (shared memory): the timed call is then the inference alone, as in
        OpenVINO's own benchmark_app."""
        import openvino as ov

        self._bound = np.ascontiguousarray(x, dtype=np.float32)
        self.request.set_input_tensor(ov.Tensor(self._bound, shared_memory=True))
        return self._bound

    def invoke(self, native: np.ndarray) -> np.ndarray:
        if native is not getattr(self, "_bound", None):
            return self.run(native)
        self.request.infer()
        return self.request.get_output_tensor(0).data


class OnnxRuntimeSession(Session):
    """ONNX Runtime's CPU provider. With `as_written` its graph optimizations are off: a Q/DQ graph then
    runs as DequantizeLinear -> float op -> QuantizeLinear, which is what TensorRT computes (int32
    accumulation). With them on (the default, used for latency), ORT fuses Q/DQ into s8 integer kernels
    that saturate on CPUs without VNNI (0.597 vs 0.989 on the demo's digits model, AVX2 AMD EPYC)."""

    AS_WRITTEN = "ORT_DISABLE_ALL"

    def __init__(self, path: Path, threads: int, as_written: bool = False) -> None:
        import onnxruntime as ort

        self.path, self.threads, self.as_written = Path(path), threads, as_written
        self.runtime = "onnxruntime " + ort.__version__
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if as_written:
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, self.AS_WRITTEN)
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.sess.run(None, {self.name: x})[0], dtype=np.float32)

    def optimization_level(self) -> str:
        """The graph optimization level the loaded session really uses (read back from ONNX Runtime)."""
        return str(self.sess.get_session_options().graph_optimization_level).split(".")[-1]

    def exact(self) -> Session:
        return self if self.as_written else OnnxRuntimeSession(self.path, self.threads, as_written=True)

    def evaluation(self) -> str:
        return (f"{self.runtime} CPU provider, graph optimizations {self.optimization_level()}: the Q/DQ graph "
                "as written (no fused integer kernels), independent of the host CPU's ISA")


SESSIONS = {".tflite": LiteRTSession, ".xml": OpenVINOSession, ".onnx": OnnxRuntimeSession}


def open_session(path: Path, threads: int = 1) -> Session:
    """Load an artifact with the runtime its file type calls for."""
    cls = SESSIONS.get(Path(path).suffix.lower())
    if cls is None:
        raise ValueError(f"unsupported artifact type {Path(path).suffix!r} (expected .tflite, .xml or .onnx)")
    return cls(Path(path), threads)


def latency_stats(samples_ms: list[float], warmup: int, threads: int) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "iterations": int(a.size),
        "warmup": int(warmup),
        "threads": int(threads),
    }


def measure(
    session: Session,
    x: np.ndarray,
    warmup: int = 10,
    iterations: int = 100,
    threads: int = 1,
    tick: Callable[[], None] | None = None,
) -> tuple:
    """Time `iterations` single-sample runs after `warmup`; returns (stats dict, samples in ms).

    The input is converted to the artifact's own format once (an int8 .tflite takes int8), outside the
    timed call, as a device application feeding quantized input does."""
    native = session.prepare(x)
    for _ in range(warmup):
        session.invoke(native)
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        session.invoke(native)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if tick is not None:
            tick()
    return latency_stats(samples, warmup, threads), samples


def evaluate(session: Session, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy, one sample at a time (the way the device runs), in the session's exact() twin."""
    session = session.exact()
    correct = 0
    for i in range(x.shape[0]):
        out = session.run(x[i : i + 1])
        correct += int(np.argmax(out.reshape(-1)) == int(y[i]))
    return correct / max(1, int(x.shape[0]))


# /proc/cpuinfo flag -> the feature name edgepipe reports: what int8 kernels depend on.
CPU_FLAGS = {
    "avx2": "avx2", "avx512f": "avx512", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
    "amx_int8": "amx", "asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve",
}


def cpu_info(cpuinfo: str | None = None) -> dict:
    """The measuring machine's architecture, CPU model and int8-relevant features (see CPU_FLAGS)."""
    import platform

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set = set()
    model = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    features = sorted({name for flag, name in CPU_FLAGS.items() if flag in flags})
    return {"arch": platform.machine(), "model": model, "features": features}


def peak_memory_kb() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except Exception:
        return None


def run(
    artifact: Path, eval_path: Path | None, warmup: int, iterations: int, threads: int, tensorrt: bool = False
) -> dict:
    if tensorrt:
        return run_tensorrt(artifact, eval_path, warmup, iterations)
    session = open_session(artifact, threads)
    result: dict[str, Any] = {"runtime": session.runtime, "accuracy": None, "samples": 0}
    if eval_path is not None:
        with np.load(str(eval_path)) as data:
            x, y = data["x"].astype(np.float32), data["y"]
        exact = session.exact()
        result["accuracy"] = evaluate(exact, x, y)
        result["samples"] = int(x.shape[0])
        result["evaluation"] = exact.evaluation()
        probe = x[:1]
    else:
        probe = np.zeros(input_shape(artifact), dtype=np.float32)
    stats, samples = measure(session, probe, warmup, iterations, threads)
    result["latency_ms"] = stats
    result["latency_samples_ms"] = samples
    result["peak_memory_kb"] = peak_memory_kb()
    result["cpu"] = cpu_info()
    return result


def input_shape(artifact: Path) -> tuple:
    suffix = artifact.suffix.lower()
    if suffix == ".tflite":
        s = LiteRTSession(artifact, 1).inp["shape"]
    elif suffix == ".xml":
        import openvino as ov

        s = [d.get_length() if d.is_static else 1 for d in ov.Core().read_model(str(artifact)).inputs[0].partial_shape]
    else:
        import onnxruntime as ort

        s = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    dims = [d if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in list(s)]
    return tuple([1] + [int(d) for d in dims[1:]])


# Processes this runner started (trtexec): killed with it when the SSH connection drops.
CHILDREN: list[subprocess.Popen] = []


def run_tensorrt(artifact: Path, eval_path: Path | None, warmup: int, iterations: int) -> dict:
    """TensorRT on the device: trt_runner.py sits next to this file (the SSH transport copies both)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgepipe_trt_runner", Path(__file__).with_name("trt_runner.py"))
    if spec is None or spec.loader is None or not Path(str(spec.origin)).exists():
        raise RuntimeError("trt_runner.py is missing next to runner.py: copy both files to the device")
    trt_runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trt_runner)
    return trt_runner.run_tensorrt(artifact, eval_path, warmup, iterations, base=sys.modules[__name__])


def _exit_on_stdin_eof() -> None:
    """End this process (and trtexec) when stdin closes: the SSH connection that started it is gone."""

    def watch() -> None:
        try:  # os.read, not sys.stdin: a daemon thread inside a buffered read aborts interpreter shutdown
            while os.read(0, 4096):
                pass
        except Exception:
            pass
        for child in CHILDREN:
            child.kill()
        os._exit(4)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgepipe-runner", description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--eval", type=Path, default=None)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tensorrt", action="store_true", help="build and time a TensorRT engine with trtexec")
    p.add_argument("--exit-on-eof", action="store_true", help="exit when stdin closes (used over SSH)")
    a = p.parse_args(argv)
    if a.exit_on_eof:
        _exit_on_stdin_eof()
    try:
        out = run(a.artifact, a.eval, a.warmup, a.iterations, a.threads, a.tensorrt)
    except Exception as err:  # one JSON line, never a traceback: the host reports it
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return 3
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    if (Path(__file__).resolve().parent / "__init__.py").exists() and sys.path and sys.path[0]:
        if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
            del sys.path[0]  # run from the source tree: targets/openvino.py must not shadow `openvino`
    sys.exit(main())

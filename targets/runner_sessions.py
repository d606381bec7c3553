"""Device-side sessions: one artifact loaded in its own runtime (LiteRT, OpenVINO, ONNX Runtime).

Self-contained like runner.py (Python >= 3.8, numpy and the artifact's runtime only) and copied next to it;
runner.py imports it as `targets.runner_sessions` on the host and as `runner_sessions` on a device.
"""

from __future__ import annotations

import os
import sys
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
    """A .tflite file, or its bytes (`preserve` keeps every intermediate tensor readable)."""

    def __init__(self, path: Path | bytes, threads: int, preserve: bool = False) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter

            self.runtime = "ai-edge-litert " + _version("ai-edge-litert")
        except ImportError:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

            self.runtime = "tflite-runtime " + _version("tflite-runtime")
        source = {"model_content": path} if isinstance(path, bytes) else {"model_path": str(path)}
        with stderr_filtered():
            self.interp = Interpreter(**source, num_threads=threads, experimental_preserve_all_tensors=preserve)
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
    """An OpenVINO IR (.xml), or an in-memory openvino.Model."""

    def __init__(self, path: Any, threads: int) -> None:
        import openvino as ov

        self.runtime = "openvino " + ov.get_version().split("-")[0]
        core = ov.Core()
        cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads)}
        self.compiled = core.compile_model(str(path) if isinstance(path, (str, Path)) else path, "CPU", cfg)
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

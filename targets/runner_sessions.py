"""Device-side sessions: one artifact loaded in its own runtime (LiteRT, OpenVINO, ONNX Runtime).

Self-contained like runner.py (Python >= 3.8, numpy and the artifact's runtime only) and copied next to it;
runner.py imports it as `targets.runner_sessions` on the host and as `runner_sessions` on a device.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only (devices run Python 3.8)
    from collections.abc import Callable

    # A batch runner: a float32 batch of up to its size in, float32 outputs (one row per sample) out.
    BatchRunner = Callable[[np.ndarray], np.ndarray]


class Session:
    """One loaded artifact: `run(x)` takes a float32 batch of one and returns float32 outputs."""

    runtime = "unknown"
    eval_batch = 1  # samples per call of its last evaluation (runner.outputs_of sets it)

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_all(self, x: Any) -> list:
        """Every output (float32, model order) for x: an array, or {input name: array} for several inputs."""
        return [self.run(x)]

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

    def batch_runner(self, n: int) -> BatchRunner | None:
        """A function that runs up to `n` samples in one call, when the artifact takes a batch dimension > 1;
        None when it runs one sample at a time (the caller then loops over run()). The session itself keeps
        its batch of one, which latency is measured with."""
        return None


def n_samples(x: Any) -> int:
    """Samples in x: an array, or {input name: array}."""
    return int(list(x.values())[0].shape[0]) if isinstance(x, dict) else int(x.shape[0])


def take(x: Any, index: Any) -> Any:
    """x[index] of an array, or of each array of {input name: array}."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


def _pad_to(x: np.ndarray, n: int) -> np.ndarray:
    """x with zero samples appended up to a batch of n (a fixed-batch model's last, shorter batch)."""
    if x.shape[0] == n:
        return x
    return np.concatenate([x, np.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)])


def usable_cores() -> int:
    """The cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _checked(fn: BatchRunner, n: int, sample: np.ndarray) -> BatchRunner | None:
    """fn when a batch of n really gives n output rows (a graph with a batch of one written into a Reshape
    does not), else None."""
    try:
        out = fn(np.repeat(sample, n, axis=0))
    except Exception:
        return None
    return fn if out.shape[0] == n else None


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


def plain_name(name: str) -> str:
    """A runtime's tensor name as the Keras model names it (the one mapping for every runtime): LiteRT's
    'serving_default_image:0' and tf2onnx's 'image:0' -> 'image'; OpenVINO and Keras' ONNX export keep 'image'."""
    head, sep, tail = name.rpartition(":")
    if sep and tail.isdigit():
        name = head
    prefix = "serving_default_"
    return name[len(prefix):] if name.startswith(prefix) else name


def output_order(names: list) -> list:
    """Positions of a runtime's outputs in the model's order: the SavedModel signature's 'output_<i>' names sort
    by i (LiteRT, OpenVINO, tf2onnx); other names (Keras' ONNX export) keep the runtime's order, which is the model's."""
    keys = [plain_name(str(n)) for n in names]
    if all(k.startswith("output_") and k[7:].isdigit() for k in keys):
        return sorted(range(len(keys)), key=lambda i: int(keys[i][7:]))
    return list(range(len(keys)))


def feed_list(x: Any, names: list) -> list:
    """x (an array for a one-input model, or {input name: array}) as one array per runtime input, in the order
    of `names` (the runtime's input names, matched by plain_name)."""
    if not isinstance(x, dict):
        if len(names) != 1:
            shown = ", ".join(plain_name(str(n)) for n in names)
            raise ValueError(f"the model has {len(names)} inputs ({shown}): feed {{input name: array}}")
        return [x]
    missing = [plain_name(str(n)) for n in names if plain_name(str(n)) not in x]
    if missing:
        raise ValueError("no data for the model input(s) " + ", ".join(missing) + " (given: " + ", ".join(x) + ")")
    return [x[plain_name(str(n))] for n in names]


# the interpreter's delegate line; LiteRT's C API (runner_litert_prof.py) logs "INFO: [file.cc:N]" and no NPU/GPU
_LITERT_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate", "INFO: [", "WARNING: [npu_registry.cc",
                 "WARNING: [gpu_registry.cc")


class stderr_filtered:
    """While open, the process's stderr (fd 2, where LiteRT's C++ prints) goes to a file; on close every line
    but LiteRT's start-up lines (_LITERT_NOISE) goes back to stderr. "INFO: Created ... delegate" is printed once
    per interpreter and would show through --quiet and into every build log; errors still come through."""

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
        self._new = lambda: Interpreter(**source, num_threads=threads, experimental_preserve_all_tensors=preserve)
        with stderr_filtered():
            self.interp = self._new()
            self.interp.allocate_tensors()
        self.inps, self.outs = self._io()
        self.inp, self.out = self.inps[0], self.outs[0]
        self.input_names = [plain_name(str(d["name"])) for d in self.inps]

    def _io(self) -> tuple:
        """Input and output details, outputs in the model's order (the serving signature's output_<i>)."""
        inps, outs = self.interp.get_input_details(), self.interp.get_output_details()
        try:
            sig = self.interp.get_signature_runner("serving_default")
            named = sig.get_output_details()
            by_index = {int(d["index"]): d for d in outs}
            keys = list(named)
            outs = [by_index[int(named[keys[i]]["index"])] for i in output_order(keys)]
            in_named = sig.get_input_details()
            in_index = {int(d["index"]): d for d in inps}
            inps = [dict(in_index[int(v["index"])], name=k) for k, v in in_named.items()]
        except Exception:  # no signature (an old converter): the interpreter's order
            pass
        return inps, outs

    @staticmethod
    def _quantized(d: dict, x: np.ndarray) -> np.ndarray:
        if d["dtype"] == np.float32:
            return x
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])

    def prepare(self, x: Any) -> Any:
        if isinstance(x, dict) or len(self.inps) > 1:
            return [self._quantized(d, a) for d, a in zip(self.inps, feed_list(x, self.input_names))]  # noqa: B905
        return self._quantized(self.inp, x)

    def invoke(self, native: Any) -> np.ndarray:
        for d, a in zip(self.inps, native if isinstance(native, list) else [native]):  # noqa: B905
            self.interp.set_tensor(d["index"], a)
        self.interp.invoke()
        return self.interp.get_tensor(self.out["index"])

    def run(self, x: Any) -> np.ndarray:
        return self._dequantized(self.invoke(self.prepare(x)))

    def run_all(self, x: Any) -> list:
        self.invoke(self.prepare(x))
        return [self._dequantized(self.interp.get_tensor(d["index"]), d) for d in self.outs]

    def _dequantized(self, y: np.ndarray, out: Any = None) -> np.ndarray:
        out = self.out if out is None else out
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def batch_runner(self, n: int) -> BatchRunner | None:
        """A second interpreter resized to a batch of n (resize_tensor_input + allocate_tensors), when the
        model declares a dynamic batch (shape_signature -1); the last, shorter batch is padded."""
        signature = list(self.inp.get("shape_signature", []))
        if n <= 1 or not signature or signature[0] != -1 or len(self.inps) > 1 or len(self.outs) > 1:
            return None
        try:
            with stderr_filtered():
                interp = self._new()
                interp.resize_tensor_input(self.inp["index"], [n] + [int(d) for d in self.inp["shape"][1:]],
                                           strict=True)
                interp.allocate_tensors()
        except Exception:
            return None
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

        def run_batch(x: np.ndarray) -> np.ndarray:
            interp.set_tensor(inp["index"], _pad_to(self.prepare(x), n))
            interp.invoke()
            return self._dequantized(interp.get_tensor(out["index"]))[: x.shape[0]]

        return _checked(run_batch, n, np.zeros([1] + [int(d) for d in self.inp["shape"][1:]], np.float32))


def openvino_config(threads: int) -> dict:
    """The CPU plugin's compile config for every OpenVINO session (and its profile: runner_profile.py). f32: a
    float or fp16 artifact runs in float32 whatever the CPU (the plugin's default is bf16 where the CPU has it, so
    the same artifact would score differently by host)."""
    return {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads),
            "INFERENCE_PRECISION_HINT": "f32"}


class OpenVINOSession(Session):
    """An OpenVINO IR (.xml), or an in-memory openvino.Model."""

    def __init__(self, path: Any, threads: int) -> None:
        import openvino as ov

        self.runtime = "openvino " + ov.get_version().split("-")[0]
        core = ov.Core()
        cfg = openvino_config(threads)
        self._source, self._core, self._cfg = path, core, cfg
        self.compiled = core.compile_model(str(path) if isinstance(path, (str, Path)) else path, "CPU", cfg)
        self.request = self.compiled.create_infer_request()
        self.input_names = [plain_name(p.get_any_name()) for p in self.compiled.inputs]
        self.order = output_order([p.get_any_name() for p in self.compiled.outputs])

    def run(self, x: Any) -> np.ndarray:
        self.request.infer(feed_list(x, self.input_names))
        return np.asarray(self.request.get_output_tensor(self.order[0]).data, dtype=np.float32).copy()

    def run_all(self, x: Any) -> list:
        self.request.infer(feed_list(x, self.input_names))
        return [np.asarray(self.request.get_output_tensor(i).data, dtype=np.float32).copy() for i in self.order]

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Bind the input tensor once (shared memory): the timed call is then the inference alone, as in
        OpenVINO's own benchmark_app."""
        import openvino as ov

        if isinstance(x, dict) or len(self.input_names) > 1:
            return x  # several inputs: bound by name in each call
        self._bound = np.ascontiguousarray(x, dtype=np.float32)
        self.request.set_input_tensor(ov.Tensor(self._bound, shared_memory=True))
        return self._bound

    def invoke(self, native: Any) -> np.ndarray:
        if native is not getattr(self, "_bound", None):
            return self.run(native)
        self.request.infer()
        return self.request.get_output_tensor(self.order[0]).data

    def batch_runner(self, n: int) -> BatchRunner | None:
        """The model reshaped to a batch of n and compiled again (this session keeps its batch of one); the
        last, shorter batch is padded. None when the reshape fails or the other dimensions are not static."""
        if n <= 1 or len(self.input_names) > 1 or len(self.order) > 1:
            return None
        try:
            source = self._source
            model = self._core.read_model(str(source)) if isinstance(source, (str, Path)) else source.clone()
            dims = list(model.inputs[0].get_partial_shape())[1:]
            if not all(d.is_static for d in dims):
                return None
            model.reshape([n] + [d.get_length() for d in dims])
            request = self._core.compile_model(model, "CPU", self._cfg).create_infer_request()
        except Exception:
            return None

        def run_batch(x: np.ndarray) -> np.ndarray:
            request.infer([np.ascontiguousarray(_pad_to(x, n), dtype=np.float32)])
            return np.asarray(request.get_output_tensor(0).data, dtype=np.float32)[: x.shape[0]].copy()

        return _checked(run_batch, n, np.zeros([1] + [d.get_length() for d in dims], np.float32))


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
        # as written, it measures accuracy only: every core (outputs are bit-identical to one thread's, and
        # 1.4x faster at 2 threads on MobileNetV2 @224)
        opts.intra_op_num_threads = usable_cores() if as_written else threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if as_written:
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, self.AS_WRITTEN)
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name
        self.names = [i.name for i in self.sess.get_inputs()]
        self.input_names = [plain_name(n) for n in self.names]
        self.order = output_order([o.name for o in self.sess.get_outputs()])

    def _feed(self, x: Any) -> dict:
        return dict(zip(self.names, feed_list(x, self.input_names)))  # noqa: B905

    def run(self, x: Any) -> np.ndarray:
        return np.asarray(self.sess.run(None, self._feed(x))[self.order[0]], dtype=np.float32)

    def run_all(self, x: Any) -> list:
        outs = self.sess.run(None, self._feed(x))
        return [np.asarray(outs[i], dtype=np.float32) for i in self.order]

    def batch_runner(self, n: int) -> BatchRunner | None:
        """This session itself, when the graph's batch axis is dynamic (a name such as "N", or unset)."""
        batch = self.sess.get_inputs()[0].shape[0] if self.sess.get_inputs()[0].shape else 1
        if n <= 1 or (isinstance(batch, int) and batch > 0) or len(self.names) > 1 or len(self.order) > 1:
            return None
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in self.sess.get_inputs()[0].shape[1:]]
        return _checked(self.run, n, np.zeros([1] + shape, np.float32))

    def optimization_level(self) -> str:
        """The graph optimization level the loaded session really uses (read back from ONNX Runtime)."""
        return str(self.sess.get_session_options().graph_optimization_level).split(".")[-1]

    def exact(self) -> Session:
        return self if self.as_written else OnnxRuntimeSession(self.path, self.threads, as_written=True)

    def evaluation(self) -> str:
        return (f"{self.runtime} CPU provider, graph optimizations {self.optimization_level()}: the Q/DQ graph "
                "as written (no fused integer kernels), independent of the host CPU's ISA")


SESSIONS = {".tflite": LiteRTSession, ".xml": OpenVINOSession, ".onnx": OnnxRuntimeSession}


def open_session(path: Path, threads: int = 1, exact: bool = False) -> Session:
    """Load an artifact with the runtime its file type calls for; `exact`: the session accuracy is measured
    with (Session.exact()), opened directly rather than beside a latency session nobody uses."""
    cls = SESSIONS.get(Path(path).suffix.lower())
    if cls is None:
        raise ValueError(f"unsupported artifact type {Path(path).suffix!r} (expected .tflite, .xml or .onnx)")
    if exact and cls is OnnxRuntimeSession:
        return OnnxRuntimeSession(Path(path), threads, as_written=True)
    session = cls(Path(path), threads)
    return session.exact() if exact else session

"""LiteRT's own op profiler, driven through ctypes (copied next to runner.py; numpy and ctypes only).

ai-edge-litert's Python API exposes no profiler: its `Interpreter` has none, and its `CompiledModel` wrapper
neither enables one nor hands one out. The wheel's `libLiteRt.so` does, through LiteRT's C API
(litert/c/litert_profiler.h, litert_compiled_model.h, litert_options.h): a CompiledModel created with the runtime
option `enable_profiling = true` (the TOML payload of the opaque options "runtime_options_string",
litert/c/options/litert_runtime_options.cc) records TFLite's profile events, which
`LiteRtGetProfilerEvents` copies out as `ProfiledEventData` (litert/c/litert_profiler_event.h). Per inference
(as 2.3.0 reports it): an "Invoke" event (the interpreter's whole inference), one OPERATOR_INVOKE_EVENT per node
TFLite ran itself (metadata1: the node index) and, for XNNPACK's delegate nodes, XNNPACK's own timing: one
DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT per XNNPACK operator (named by XNNPACK with its data types,
"Convolution (NHWC, QC8) IGEMM"), the delegate node itself then not timed; besides, LiteRT's own
"LiteRT::Run[...]" events around the inference. Times are whole microseconds (XNNPACK's truncated). tflite-runtime ships no such library, nor do ai-edge-litert releases before 2.2 speak the C API
read here: there, `library()` says why not.
"""

from __future__ import annotations

import ctypes
import importlib.util
import time
from pathlib import Path
from typing import Any

SYMBOLS = ("LiteRtCreateEnvironment", "LiteRtCreateModelFromFile", "LiteRtCreateOptions",
           "LiteRtSetOptionsHardwareAccelerators", "LiteRtCreateOpaqueOptions", "LiteRtAddOpaqueOptions",
           "LiteRtCreateCompiledModel", "LiteRtCompiledModelGetProfiler", "LiteRtStartProfiler",
           "LiteRtStopProfiler", "LiteRtGetNumProfilerEvents", "LiteRtGetProfilerEvents",
           "LiteRtRunCompiledModel", "LiteRtGetModelSignature", "LiteRtGetNumSignatureInputs",
           "LiteRtGetNumSignatureOutputs", "LiteRtGetSignatureInputTensorByIndex",
           "LiteRtGetSignatureOutputTensorByIndex", "LiteRtGetSignatureInputName", "LiteRtGetSignatureOutputName",
           "LiteRtGetRankedTensorType", "LiteRtCompiledModelResizeInputTensor",
           "LiteRtGetCompiledModelInputBufferRequirements", "LiteRtGetCompiledModelOutputBufferRequirements",
           "LiteRtCreateManagedTensorBufferFromRequirements", "LiteRtLockTensorBuffer", "LiteRtUnlockTensorBuffer",
           "LiteRtGetTensorBufferSize", "LiteRtDestroyTensorBuffer", "LiteRtDestroyCompiledModel",
           "LiteRtDestroyOptions", "LiteRtDestroyModel", "LiteRtDestroyEnvironment")
CPU = 1  # kLiteRtHwAcceleratorCpu (litert_common.h): TFLite's kernels with XNNPACK
WRITE = 1  # kLiteRtTensorBufferLockModeWrite
OPERATOR, DELEGATE_OPERATOR, DELEGATE_PROFILED_OPERATOR = 1 << 1, 1 << 2, 1 << 3  # LiteRtProfilerEventType
MAX_RANK = 8  # LITERT_TENSOR_MAX_RANK
MIN_VERSION = (2, 2)  # the signatures and layouts below are LiteRT 2.2's and 2.3's (litert/c/*.h)


class _Memory(ctypes.Structure):  # LiteRtMemoryUsage
    _fields_ = [("total", ctypes.c_size_t), ("in_use", ctypes.c_size_t), ("private", ctypes.c_size_t)]


class TensorType(ctypes.Structure):  # LiteRtRankedTensorType: 72 bytes, "ABI stable" (litert_model_types.h)
    _fields_ = [("element_type", ctypes.c_int), ("rank_bits", ctypes.c_uint),  # rank:7, has_strides:1
                ("dimensions", ctypes.c_int32 * MAX_RANK), ("strides", ctypes.c_uint32 * MAX_RANK)]

    def shape(self) -> list[int]:
        return [int(d) for d in self.dimensions[: self.rank_bits & 0x7F]]


class Event(ctypes.Structure):  # ProfiledEventData
    _fields_ = [("tag", ctypes.c_char_p), ("event_type", ctypes.c_int), ("start_us", ctypes.c_uint64),
                ("elapsed_us", ctypes.c_uint64), ("begin_mem", _Memory), ("end_mem", _Memory),
                ("metadata1", ctypes.c_uint64), ("metadata2", ctypes.c_uint64), ("source", ctypes.c_int)]


class Record:
    """One event's fields as Python values (ProfiledEventData's tag is the profiler's memory)."""

    __slots__ = ("tag", "event_type", "start_us", "elapsed_us", "metadata1")

    def __init__(self, e: Event) -> None:
        self.tag = (e.tag or b"").decode(errors="replace")
        self.event_type, self.start_us, self.elapsed_us = int(e.event_type), int(e.start_us), int(e.elapsed_us)
        self.metadata1 = int(e.metadata1)


def library(symbols: tuple = SYMBOLS) -> ctypes.CDLL | str:
    """ai-edge-litert's libLiteRt.so with every C function in `symbols` (those used here), or why there is none."""
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        return "ai-edge-litert, whose libLiteRt.so has one (LiteRT's C API), is not installed"
    found = _version()
    if found < MIN_VERSION:
        return (f"ai-edge-litert {'.'.join(map(str, found))} predates the C API read here (LiteRT 2.2's: before it, "
                "LiteRtCreateModelFromFile took no environment)")
    path = Path(list(spec.submodule_search_locations)[0]) / "libLiteRt.so"
    if not path.exists():
        return f"this ai-edge-litert ships no {path.name} (LiteRT's C API, with the op profiler)"
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        return f"its {path.name} does not load ({err})"
    missing = [s for s in symbols if not hasattr(lib, s)]
    if missing:
        return f"its {path.name} lacks the C functions {', '.join(missing)}"
    return lib


def _version() -> tuple:
    from importlib.metadata import version

    try:
        return tuple(int(p) for p in version("ai-edge-litert").split(".")[:2])
    except Exception:
        return (0,)


class _Check:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib

    def __call__(self, name: str, *args: Any) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"{name} returned LiteRtStatus {status}")


def _opaque(check: _Check, libc: ctypes.CDLL, options: ctypes.c_void_p, identifier: bytes, toml: bytes) -> None:
    """Add a TOML payload as opaque options (the runtime frees it with free())."""
    libc.strdup.restype = ctypes.c_void_p
    payload = ctypes.c_void_p(libc.strdup(toml))
    opaque = ctypes.c_void_p()
    free = ctypes.c_void_p(ctypes.cast(libc.free, ctypes.c_void_p).value)
    check("LiteRtCreateOpaqueOptions", identifier, payload, free, ctypes.byref(opaque))
    check("LiteRtAddOpaqueOptions", options, opaque)


class ProfiledModel:
    """A LiteRT CompiledModel on the CPU accelerator with its profiler on; `run` times inferences."""

    def __init__(self, lib: ctypes.CDLL, artifact: Path, threads: int) -> None:
        self.lib, check = lib, _Check(lib)
        self.check = check
        self.env, self.model, self.options, self.compiled = (ctypes.c_void_p() for _ in range(4))
        self.inputs: list[ctypes.c_void_p] = []
        self.input_names: list[str] = []  # the signature's, in the order of `inputs`
        self.outputs: list[ctypes.c_void_p] = []
        self.profiler = ctypes.c_void_p()
        self._prepare_signatures(lib)
        try:
            self._create(artifact, threads)
        except Exception:
            self.close()
            raise

    def _create(self, artifact: Path, threads: int) -> None:
        check = self.check
        check("LiteRtCreateEnvironment", 0, None, ctypes.byref(self.env))
        check("LiteRtCreateModelFromFile", self.env, str(artifact).encode(), ctypes.byref(self.model))
        check("LiteRtCreateOptions", ctypes.byref(self.options))
        check("LiteRtSetOptionsHardwareAccelerators", self.options, CPU)
        libc = ctypes.CDLL(None)
        _opaque(check, libc, self.options, b"runtime_options_string", b"enable_profiling = true\n")
        _opaque(check, libc, self.options, b"xnnpack", f"num_threads = {int(threads)}\n".encode())
        check("LiteRtCreateCompiledModel", self.env, self.model, self.options, ctypes.byref(self.compiled))
        check("LiteRtCompiledModelGetProfiler", self.compiled, ctypes.byref(self.profiler))
        if not self.profiler.value:
            raise RuntimeError("LiteRtCompiledModelGetProfiler gave no profiler with enable_profiling = true")
        self._buffers()

    def _prepare_signatures(self, lib: ctypes.CDLL) -> None:
        lib.LiteRtDestroyCompiledModel.restype = lib.LiteRtDestroyOptions.restype = None
        lib.LiteRtDestroyModel.restype = lib.LiteRtDestroyEnvironment.restype = None
        lib.LiteRtDestroyTensorBuffer.restype = None
        lib.LiteRtRunCompiledModel.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p,
                                               ctypes.c_size_t, ctypes.c_void_p]

    def _buffers(self) -> None:
        signature = ctypes.c_void_p()
        self.check("LiteRtGetModelSignature", self.model, ctypes.c_size_t(0), ctypes.byref(signature))
        types = {kind: self._tensor_types(signature, kind) for kind in ("Input", "Output")}
        for kind, found in types.items():  # a dynamic batch (-1) runs as a batch of one
            for i, t in enumerate(found):
                shape = [d if d >= 0 else 1 for d in t.shape()]
                if shape != t.shape() and kind == "Input":
                    dims = (ctypes.c_int * len(shape))(*shape)
                    self.check("LiteRtCompiledModelResizeInputTensor", self.compiled, ctypes.c_size_t(0),
                               ctypes.c_size_t(i), dims, ctypes.c_size_t(len(shape)))
                for k, d in enumerate(shape):
                    t.dimensions[k] = d
        for kind, into in (("Input", self.inputs), ("Output", self.outputs)):
            for i, t in enumerate(types[kind]):
                requirements, buffer = ctypes.c_void_p(), ctypes.c_void_p()
                self.check(f"LiteRtGetCompiledModel{kind}BufferRequirements", self.compiled, ctypes.c_size_t(0),
                           ctypes.c_size_t(i), ctypes.byref(requirements))
                self.check("LiteRtCreateManagedTensorBufferFromRequirements", self.env, ctypes.byref(t),
                           requirements, ctypes.byref(buffer))
                into.append(buffer)
        self._in = (ctypes.c_void_p * len(self.inputs))(*[b.value for b in self.inputs])
        self._out = (ctypes.c_void_p * len(self.outputs))(*[b.value for b in self.outputs])

    def _tensor_types(self, signature: ctypes.c_void_p, kind: str) -> list[TensorType]:
        count, found = ctypes.c_size_t(), []
        self.check(f"LiteRtGetNumSignature{kind}s", signature, ctypes.byref(count))
        for i in range(count.value):
            tensor, tensor_type, name = ctypes.c_void_p(), TensorType(), ctypes.c_char_p()
            self.check(f"LiteRtGetSignature{kind}TensorByIndex", signature, ctypes.c_size_t(i), ctypes.byref(tensor))
            self.check("LiteRtGetRankedTensorType", tensor, ctypes.byref(tensor_type))
            self.check(f"LiteRtGetSignature{kind}Name", signature, ctypes.c_size_t(i), ctypes.byref(name))
            found.append(tensor_type)
            if kind == "Input":
                self.input_names.append((name.value or b"").decode())
        return found

    def write_input(self, index: int, data: bytes) -> None:
        """The input's bytes (already in the tensor's type); more than its buffer holds raises."""
        size, addr = ctypes.c_size_t(), ctypes.c_void_p()
        self.check("LiteRtGetTensorBufferSize", self.inputs[index], ctypes.byref(size))
        if size.value < len(data):
            raise ValueError(f"input {index} holds {size.value} bytes, not {len(data)}")
        self.check("LiteRtLockTensorBuffer", self.inputs[index], ctypes.byref(addr), WRITE)
        try:
            ctypes.memmove(addr, data, len(data))
        finally:
            self.check("LiteRtUnlockTensorBuffer", self.inputs[index])

    def run(self, warmup: int, runs: int) -> tuple[list[Record], list[float]]:
        """`warmup` untimed inferences, then `runs` profiled ones: their events and their wall times in ms."""
        for _ in range(warmup):
            self._invoke()
        self.check("LiteRtStartProfiler", self.profiler)  # starts with an empty buffer
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self._invoke()
            walls.append((time.perf_counter() - t0) * 1000.0)
        self.check("LiteRtStopProfiler", self.profiler)
        count = ctypes.c_int()
        self.check("LiteRtGetNumProfilerEvents", self.profiler, ctypes.byref(count))
        events = (Event * count.value)()
        self.check("LiteRtGetProfilerEvents", self.profiler, count, events)
        return [Record(e) for e in events], walls  # copied out: the tags die with the profiler

    def _invoke(self) -> None:
        self.check("LiteRtRunCompiledModel", self.compiled, 0, len(self.inputs), self._in, len(self.outputs),
                   self._out)

    def close(self) -> None:
        for b in self.inputs + self.outputs:
            self.lib.LiteRtDestroyTensorBuffer(b)
        self.inputs, self.outputs = [], []
        for name, handle in (("LiteRtDestroyCompiledModel", self.compiled), ("LiteRtDestroyOptions", self.options),
                             ("LiteRtDestroyModel", self.model), ("LiteRtDestroyEnvironment", self.env)):
            if handle.value:
                getattr(self.lib, name)(handle)
                handle.value = None

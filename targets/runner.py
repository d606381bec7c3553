"""Device-side runner: latency, peak memory and accuracy of one artifact in its own runtime.

Self-contained on purpose (Python >= 3.8, numpy and the artifact's runtime only): the SSH transport
copies this file to the device and runs it there; the host imports the same functions.

    python runner.py ARTIFACT [--eval EVAL.npz] [--warmup N] [--iterations N] [--threads N]
                     [--tensorrt] [--exit-on-eof]

prints one JSON object on stdout. `--tensorrt` (a .onnx on a Jetson) builds the engine with trtexec and
times it with trtexec; `--exit-on-eof` ends the run when stdin closes (the SSH connection dropped)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from . import runner_metrics  # noqa: I001 (compact: the file is copied to devices and kept short)
    from .runner_arrays import npz_members, read_member
    from .runner_sessions import (LiteRTSession, OnnxRuntimeSession, OpenVINOSession, Session, feed_list,
                                  n_samples, open_session, output_order, plain_name, stderr_filtered, take)
    from .runner_settings import Bench
else:  # run as a script (on a device): its runner_*.py modules sit next to this file
    import runner_metrics  # type: ignore[no-redef]  # noqa: I001
    from runner_arrays import npz_members, read_member  # type: ignore[no-redef]
    from runner_sessions import (  # type: ignore[no-redef]
        LiteRTSession, OnnxRuntimeSession, OpenVINOSession, Session, feed_list, n_samples, open_session,
        output_order, plain_name, stderr_filtered, take)
    from runner_settings import Bench  # type: ignore[no-redef]

__all__ = ["Bench", "LiteRTSession", "OnnxRuntimeSession", "OpenVINOSession", "Session", "feed_list", "n_samples",
           "open_session", "output_order", "read_member", "stderr_filtered", "take"]


def latency_stats(samples_ms: list[float], warmup: int, threads: int) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "iqr": [float(np.percentile(a, 25)), float(np.percentile(a, 75))],
        "median_ci": median_interval(a),
        "iterations": int(a.size),
        "warmup": int(warmup),
        "threads": int(threads),
    }


def median_interval(samples: Any, z: float = 1.959964) -> list:
    """A distribution-free 95% interval for the median: the order statistics k and n-1-k with
    k = floor((n - z sqrt(n)) / 2) (the binomial's normal approximation); [min, max] below 6 samples."""
    a = np.sort(np.asarray(samples, dtype=np.float64))
    n = int(a.size)
    k = max(0, int(np.floor((n - z * np.sqrt(n)) / 2.0))) if n >= 6 else 0
    return [float(a[k]), float(a[n - 1 - k])] if n else [float("nan"), float("nan")]


def measure(
    session: Session,
    x: Any,
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


def score(outputs: np.ndarray, y: np.ndarray, metric: str = "accuracy", x: Any = None) -> float:
    """The one evaluation function: the task's metric (runner_metrics spec, default top-1 accuracy) of
    outputs (N, ...) against y. Every value edgepipe reports (Keras models, each runtime, sensitivity,
    search) is computed here."""
    return runner_metrics.score(outputs, y, metric, x)


EVAL_BATCH = 32  # samples per call when evaluating an artifact that takes a batch dimension > 1
SPOT_CHECK = 64  # samples, spread over the split, also run one at a time (as deployed) to vouch for a batch
RELATIVE_TOLERANCE = 1e-3  # of each sample's largest output magnitude, batched vs batch-1


def outputs_of(session: Session, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """The session's outputs (N, -1): `batch` samples per call where the artifact takes a batch dimension > 1
    (Session.batch_runner), else one sample at a time. A batch only amortizes the per-call cost, and that is
    checked: SPOT_CHECK samples spread over the split also run one at a time, and unless every one agrees with
    its batched outputs (the same argmax, and within RELATIVE_TOLERANCE of the sample's largest output; a
    runtime's batch kernel is not its batch-1 kernel) every sample is evaluated one at a time, as deployed."""
    n = min(int(batch), x.shape[0])
    run_batch = session.batch_runner(n) if n > 1 else None
    session.eval_batch = 1
    if run_batch is not None:
        outputs = np.concatenate([_flat_rows(run_batch(chunk)) for chunk in _chunks(x, n)])
        spots = np.unique(np.linspace(0, x.shape[0] - 1, min(SPOT_CHECK, x.shape[0])).astype(np.int64))
        single = _one_at_a_time(session, np.concatenate([np.asarray(x[i : i + 1]) for i in spots]))
        if _agrees(outputs[spots], single):
            session.eval_batch = n
            return outputs
    return _one_at_a_time(session, x) if x.shape[0] else np.zeros((0, 1))


def _chunks(x: Any, n: int) -> Iterator[np.ndarray]:
    """x in slices of n samples, each read once (x may be read lazily from a file)."""
    for i in range(0, x.shape[0], n):
        yield np.asarray(x[i : i + n])


def _flat_rows(out: np.ndarray) -> np.ndarray:
    return out.reshape(out.shape[0], -1)


def outputs_all(session: Session, x: Any) -> list:
    """Every output of the session (model order), each (N, -1): x is an array, or {input name: array} for a model
    with several inputs. One output and one input: outputs_of (batched, spot-checked); else one sample at a time."""
    if not isinstance(x, dict) and (x.shape[0] == 0 or len(session.run_all(x[:1])) == 1):
        return [outputs_of(session, x)]
    rows = [session.run_all(take(x, slice(i, i + 1))) for i in range(n_samples(x))]
    if not rows:
        return []
    return [np.concatenate([r[k].reshape(1, -1) for r in rows]) for k in range(len(rows[0]))]


def _one_at_a_time(session: Session, x: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(x[i : i + 1]).reshape(1, -1) for i in range(x.shape[0])])


def _agrees(batched: np.ndarray, single: np.ndarray) -> bool:
    """Batched rows against the same samples run one at a time: identical argmax (rows of several values) and
    every value within RELATIVE_TOLERANCE of its row's largest magnitude."""
    head, single = batched.astype(np.float64), single.astype(np.float64)
    if not (np.all(np.isfinite(head)) and np.all(np.isfinite(single))):
        return bool(np.array_equal(head, single, equal_nan=True))
    if not single.size:
        return True
    if single.shape[1] > 1 and not np.array_equal(head.argmax(axis=1), single.argmax(axis=1)):
        return False
    scale = np.max(np.abs(single), axis=1, keepdims=True)
    return bool(np.all(np.abs(head - single) <= RELATIVE_TOLERANCE * scale + 1e-9))


def top1(outputs: np.ndarray) -> list:
    """Each sample's top-1 class: what host and device must agree on."""
    outputs = np.asarray(outputs)
    return [int(i) for i in outputs.reshape(outputs.shape[0], -1).argmax(axis=1)] if outputs.size else []


def read_eval(eval_path: Path) -> tuple:
    """An eval.npz's (x, y): x read a batch at a time as evaluation asks for it (np.savez files are
    uncompressed), y whole."""
    return read_member(eval_path, "x"), np.asarray(read_member(eval_path, "y"))


def evaluate(session: Session, x: Any, y: np.ndarray, metric: str = "accuracy", output: int = 0) -> float:
    """score() of the session's output number `output` (outputs_all, in batches where the artifact allows), in
    its exact() twin; x is an array, or {input name: array} for several inputs."""
    outputs = outputs_all(session.exact(), x)[output]
    return score(outputs, y, metric, None if isinstance(x, dict) else x)


class EvalSet:
    """OUT/data/eval.npz: `x` and `y` for a model with one input and one output; with several, `x.<input name>`
    per input, `outputs` (the output names, model order), `output` (the one `y` labels, the metric's)."""

    def __init__(self, path: Path) -> None:
        keys = list(npz_members(path))
        inputs = [k[2:] for k in keys if k.startswith("x.")]  # x read a batch at a time (runner_arrays), y whole
        self.x: Any = {k: read_member(path, "x." + k) for k in inputs} if inputs else read_member(path, "x")
        self._path, self._y = path, None  # type: Path, Any
        names: dict = {}
        if "outputs" in keys:  # small: read whole
            with np.load(str(path)) as data:
                names = {k: data[k] for k in ("outputs", "output")}
        self.outputs = [str(n) for n in names.get("outputs", [])]
        self.output = str(names["output"]) if "output" in names else (self.outputs[0] if self.outputs else "")

    @property
    def y(self) -> np.ndarray:  # the labels, read when first asked for (comparing outputs reads none)
        if self._y is None:
            self._y = np.asarray(read_member(self._path, "y"))
        return self._y

    @property
    def output_index(self) -> int:
        return self.outputs.index(self.output) if self.outputs else 0

    @property
    def samples(self) -> int:
        return n_samples(self.x)


def input_shape(artifact: Path) -> tuple:
    """The first input's shape with a batch of one."""
    return list(input_shapes(artifact).values())[0]


def input_shapes(artifact: Path) -> dict:
    """{input name (plain_name): shape with a batch of one}, in the runtime's order."""
    suffix = artifact.suffix.lower()
    if suffix == ".tflite":
        session = LiteRTSession(artifact, 1)
        found = [(plain_name(str(d["name"])), list(d["shape"])) for d in session.inps]
    elif suffix == ".xml":
        import openvino as ov

        found = [(plain_name(p.get_any_name()), [d.get_length() if d.is_static else 1 for d in p.partial_shape])
                 for p in ov.Core().read_model(str(artifact)).inputs]
    else:
        import onnxruntime as ort

        found = [(plain_name(i.name), list(i.shape))
                 for i in ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"]).get_inputs()]
    out = {}
    for name, s in found:
        dims = [d if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in s]
        out[name] = tuple([1] + [int(d) for d in dims[1:]])
    return out


def zeros_feed(artifact: Path) -> Any:
    """Generated (zero) input for latency alone: an array, or {input name: array} for several inputs."""
    shapes = input_shapes(artifact)
    feed = {k: np.zeros(v, dtype=np.float32) for k, v in shapes.items()}
    return feed if len(feed) > 1 else list(feed.values())[0]


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
    """This process's peak resident set: VmHWM (it counts file-backed pages, which ru_maxrss may miss), else
    ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM")).split()[1])
    except Exception:
        pass
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except Exception:
        return None


@contextlib.contextmanager
def _no_progress(label: str, total: int | None = None) -> Iterator[Callable[[], None]]:
    yield lambda: None


def evaluate_into(result: dict, session: Session, eval_path: Path, metric: str = "accuracy",
                  progress: Callable[..., Any] = _no_progress) -> Any:
    """The eval set's metric in `result` (accuracy, per_sample, predictions, samples, evaluation, its batch) from
    the session's exact() twin; returns the first sample, the input latency is then timed on."""
    ev = EvalSet(eval_path)
    x, y = ev.x, ev.y
    exact = session.exact()  # an ONNX Q/DQ graph runs as written, whatever the CPU's ISA
    with progress(f"accuracy on {len(y)} samples"):
        outputs = outputs_all(exact, x)[ev.output_index]
    result["accuracy"], stats = runner_metrics.score_and_per_sample(  # per sample too: the drop's paired interval
        outputs, y, metric, None if isinstance(x, dict) else x)
    if stats is not None:
        result["per_sample"] = stats.tolist()
    if metric.split(":")[0] in ("accuracy", "top_k") or metric == "agreement:top1":  # classes: top-1 per sample,
        result["predictions"] = top1(outputs)  # for host-versus-device agreement
    result["samples"] = ev.samples
    result["evaluation"] = exact.evaluation()
    result["evaluation_batch"] = exact.eval_batch
    return take(x, slice(0, 1))


def run(artifact: Path, eval_path: Path | None, bench: Bench = Bench(), tensorrt: bool = False,
        progress: Callable[..., Any] = _no_progress, metric: str = "accuracy") -> dict:
    """The one measurement of an artifact, on a device or on the host, timed as `bench` says: accuracy on the
    eval set (the session's exact() twin), latency, peak memory and the CPU that measured.
    `progress(label, total=None)` is a context manager yielding advance(), like pipeline.ui.UI.task."""
    if tensorrt:
        return run_tensorrt(artifact, eval_path, bench.warmup, bench.iterations, metric)
    session = open_session(artifact, bench.threads)
    result: dict[str, Any] = {"runtime": session.runtime, "accuracy": None, "samples": 0}
    probe = evaluate_into(result, session, eval_path, metric, progress) if eval_path is not None else zeros_feed(artifact)
    with progress(f"latency, {bench.iterations} runs", total=bench.iterations) as advance:
        stats, samples = measure(session, probe, bench.warmup, bench.iterations, bench.threads, tick=advance)
    result["latency_ms"] = stats
    result["latency_samples_ms"] = samples
    result["peak_memory_kb"] = peak_memory_kb()
    result["cpu"] = cpu_info()
    return result


# Processes this runner started (trtexec): killed with it when the SSH connection drops.
CHILDREN: list[subprocess.Popen] = []


def run_tensorrt(artifact: Path, eval_path: Path | None, warmup: int, iterations: int, metric: str = "accuracy") -> dict:
    """TensorRT on the device: trt_runner.py sits next to this file (the SSH transport copies both)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgepipe_trt_runner", Path(__file__).with_name("trt_runner.py"))
    if spec is None or spec.loader is None or not Path(str(spec.origin)).exists():
        raise RuntimeError("trt_runner.py is missing next to runner.py: copy both files to the device")
    trt_runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trt_runner)
    return trt_runner.run_tensorrt(artifact, eval_path, warmup, iterations, base=sys.modules[__name__], metric=metric)


def exit_on_stdin_eof() -> None:
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
    p.add_argument("--metric", default="accuracy", help="the task's metric (a runner_metrics spec)")
    p.add_argument("--exit-on-eof", action="store_true", help="exit when stdin closes (used over SSH)")
    a = p.parse_args(argv)
    if a.exit_on_eof:
        exit_on_stdin_eof()
    try:
        out = run(a.artifact, a.eval, Bench(a.warmup, a.iterations, a.threads), a.tensorrt, metric=a.metric)
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

"""Device-side benchmark run: one artifact's cold start (runtime import, load, first inference), warm latency,
the runner process's peak resident memory and, with --profile, its per-op times (runner_profile.py); or, with
--against, two artifacts timed in interleaved rounds (ABBA order) in this one process.

Self-contained like runner.py (Python >= 3.8, numpy and the artifact's runtime only) and copied next to it:

    python runner_bench.py ARTIFACT [--eval EVAL.npz] [--warmup N] [--iterations N] [--threads N]
                           [--profile] [--against OTHER] [--rounds N] [--tensorrt] [--exit-on-eof]

prints one JSON object on stdout. Cold start is this fresh process's: the runtime's Python module imported,
the artifact loaded (interpreter built and tensors allocated, model compiled, session created), then one
inference; the operating system's file cache may still hold the artifact from an earlier run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__:
    from . import runner, runner_profile  # noqa: I001
    from .runner_sessions import LiteRTSession, OpenVINOSession, Session, take
else:  # run as a script (on a device, or on the host in a fresh process): the siblings sit next to this file
    import runner  # type: ignore[no-redef]  # noqa: I001
    import runner_profile  # type: ignore[no-redef]
    from runner_sessions import LiteRTSession, OpenVINOSession, Session, take  # type: ignore[no-redef]

ROUNDS = 10  # interleaved blocks per artifact; the samples of a block run back to back
# the runtime's Python module(s) per artifact kind, in the order runner_sessions tries them
RUNTIME_MODULES = {".tflite": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"),
                   ".xml": ("openvino",), ".onnx": ("onnxruntime",)}


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def import_runtime(artifact: Path) -> float:
    """Import the artifact's runtime module; the milliseconds it took (0 when it was imported already)."""
    t0 = time.perf_counter()
    names = RUNTIME_MODULES.get(Path(artifact).suffix.lower(), ())
    for i, name in enumerate(names):
        try:
            importlib.import_module(name)
            break
        except ImportError:
            if i == len(names) - 1:
                raise
    return _ms(t0)


def session_feed(session: Session) -> Any:
    """Zeros for each input of a loaded session, a batch of one (as runner.zeros_feed, without loading again)."""
    if isinstance(session, LiteRTSession):
        shapes = [list(d["shape"]) for d in session.inps]
    elif isinstance(session, OpenVINOSession):
        shapes = [[d.get_length() if d.is_static else 1 for d in p.partial_shape] for p in session.compiled.inputs]
    else:
        shapes = [list(i.shape) for i in session.sess.get_inputs()]  # type: ignore[attr-defined]
    names = list(session.input_names)  # type: ignore[attr-defined]
    feed = {}
    for name, shape in zip(names, shapes):  # noqa: B905 (Python 3.8 on devices)
        dims = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in shape[1:]]
        feed[name] = np.zeros(tuple([1] + dims), dtype=np.float32)
    return feed if len(feed) > 1 else list(feed.values())[0]


def first_sample(eval_path: Path | None) -> Any:
    """The eval set's first sample (what latency is timed on when an eval set is given), else None."""
    if eval_path is None:
        return None
    return take(runner.EvalSet(eval_path).x, slice(0, 1))


def cold_start(artifact: Path, threads: int, probe: Any) -> tuple:
    """(session, input, {import_ms, load_ms, first_inference_ms}) for the artifact in this fresh process."""
    cold = {"import_ms": import_runtime(artifact)}
    t0 = time.perf_counter()
    session = runner.open_session(artifact, threads)
    cold["load_ms"] = _ms(t0)
    x = session_feed(session) if probe is None else probe
    t0 = time.perf_counter()
    session.invoke(session.prepare(x))
    cold["first_inference_ms"] = _ms(t0)
    return session, x, cold


def bench(artifact: Path, eval_path: Path | None, settings: runner.Bench, profile: bool = False,
          metric: str = "accuracy") -> dict:
    """Cold start, warm latency, peak memory (taken before the eval set and the profiler add theirs), accuracy
    when an eval set is given, per-op times with `profile`, and the CPU."""
    warmup, iterations, threads = settings.warmup, settings.iterations, settings.threads
    session, x, cold = cold_start(artifact, threads, first_sample(eval_path))
    stats, samples = runner.measure(session, x, warmup, iterations, threads)
    result = {"runtime": session.runtime, "accuracy": None, "samples": 0, "cold_start": cold, "latency_ms": stats,
              "latency_samples_ms": samples, "peak_memory_kb": runner.peak_memory_kb()}  # type: dict
    if eval_path is not None:
        runner.evaluate_into(result, session, eval_path, metric)
    if profile:
        result["profile"] = runner_profile.profile(artifact, threads, x, runs=max(10, min(iterations, 200)))
    result["cpu"] = runner.cpu_info()
    return result


def interleaved(sessions: list, feeds: list, warmup: int, iterations: int, threads: int,
                rounds: int = ROUNDS) -> tuple:
    """Two loaded sessions timed alternately in one process: `warmup` untimed runs each, then `rounds` blocks of
    iterations // rounds samples each, in ABBA order (neither gains from where it stood while the machine's load
    drifts). Returns the two sample lists (ms)."""
    for s, feed in zip(sessions, feeds):  # noqa: B905
        native = s.prepare(feed)
        for _ in range(warmup):
            s.invoke(native)
    per = max(1, iterations // rounds)
    out = [[], []]  # type: list
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            out[i] += runner.measure(sessions[i], feeds[i], 0, per, threads)[1]
    return out[0], out[1]


def against(artifact: Path, other: Path, eval_path: Path | None, settings: runner.Bench, rounds: int = ROUNDS,
            metric: str = "accuracy") -> dict:
    """Both artifacts timed in interleaved rounds (`interleaved`) as `settings` says; with an eval set, each one's
    accuracy and per-sample scores on it (paired: the same samples)."""
    warmup, iterations, threads = settings.warmup, settings.iterations, settings.threads
    sessions = [runner.open_session(a, threads) for a in (artifact, other)]
    probe = first_sample(eval_path)
    feeds = [session_feed(s) if probe is None else probe for s in sessions]
    a, b = interleaved(sessions, feeds, warmup, iterations, threads, rounds)
    result = {"runtime": sessions[0].runtime, "runtimes": [s.runtime for s in sessions],
              "latency_samples_ms": [a, b], "threads": threads, "warmup": warmup, "rounds": rounds,
              "peak_memory_kb": runner.peak_memory_kb(), "cpu": runner.cpu_info()}  # type: dict
    if eval_path is not None:
        scores = []
        for s in sessions:
            one = {}  # type: dict
            runner.evaluate_into(one, s, eval_path, metric)
            scores.append({k: one.get(k) for k in ("accuracy", "per_sample", "samples")})
        result["scores"] = scores
    return result


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgepipe-runner-bench", description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path)
    p.add_argument("--eval", type=Path, default=None)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--profile", action="store_true", help="per-op times from the runtime's own profiler")
    p.add_argument("--against", type=Path, default=None, help="a second artifact, timed interleaved with the first")
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--tensorrt", action="store_true", help="a TensorRT engine timed with trtexec (runner.py's)")
    p.add_argument("--exit-on-eof", action="store_true", help="exit when stdin closes (used over SSH)")
    a = p.parse_args(argv)
    if a.exit_on_eof:
        runner.exit_on_stdin_eof()
    try:
        settings = runner.Bench(a.warmup, a.iterations, a.threads)
        if a.tensorrt:  # trtexec builds and times the engine: no cold start or profile of ours
            out = runner.run(a.artifact, a.eval, settings, True, metric=a.metric)
            out["profile"] = runner_profile.unavailable("TensorRT", "trtexec's --dumpProfile is not run by edgepipe")
        elif a.against is not None:
            out = against(a.artifact, a.against, a.eval, settings, a.rounds, a.metric)
        else:
            out = bench(a.artifact, a.eval, settings, a.profile, a.metric)
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

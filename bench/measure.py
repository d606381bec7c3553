"""Interleaved latency: several artifacts of one model timed side by side, in rounds (ABC, BCA, CAB, ...).

On a busy machine the load drifts over seconds; timing A for a minute and then B for a minute measures the
drift as much as the artifacts. Here every round runs each session for the same short burst (~50 ms), in a
rotated order; a session's latency is the median of its per-round medians, and a ratio A/B is the median over
the rounds of (A's round median / B's round median): both sides of each quotient ran within ~0.1 s of each
other, under the same load. (On this kind of host a neighbour slows everything by up to 3x for seconds at a
time; pairing at that scale is what keeps ratios steady where plain medians of long bursts swing by 30%.)

The timing runs in a child process (`python -m bench.measure`, the job as JSON on stdin, one JSON object on
stdout) with only numpy and the runtimes loaded, through edgepipe's own runner sessions
(`targets.runner.open_session`) called the way the runner's `measure` calls them for `edgepipe build` and
`edgepipe bench`: the input converted to the artifact's own format once (`session.prepare`: an int8 .tflite
gets int8, OpenVINO binds the tensor), then `session.invoke` timed. The job's `runner_copy` also times
`session.run`, the accuracy path, which quantizes the float input with numpy inside every call.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from targets.child import run_module

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Timing:
    rounds: int = 60
    round_s: float = 0.05  # per session per round
    warmup_s: float = 0.5  # per session, before the first round
    min_iterations: int = 5
    max_iterations: int = 500


class PreparedInput:
    """A runner session fed its input in the artifact's own format, made once: each call is session.invoke."""

    def __init__(self, session: Any, x: np.ndarray) -> None:
        self.session, self.runtime = session, session.runtime
        self.native = session.prepare(x)

    def run(self, _x: np.ndarray) -> np.ndarray:
        return self.session.invoke(self.native)


def _native(session: Any, x: np.ndarray) -> Any:
    return PreparedInput(session, x)


def _time_calls(session: Any, x: np.ndarray, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        session.run(x)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def interleaved(sessions: dict[str, Any], x: np.ndarray, timing: Timing) -> dict[str, Any]:
    """Per-round medians (ms) of every session, plus the iteration counts used."""
    iters: dict[str, int] = {}
    for name, s in sessions.items():
        s.run(x)  # first call: allocation, OpenVINO's lazy compilation
        t_end = time.perf_counter() + timing.warmup_s
        calls = [0.0]
        while time.perf_counter() < t_end:
            calls = _time_calls(s, x, 3)
        per_call_s = max(1e-6, float(np.median(calls)) / 1e3)
        iters[name] = int(np.clip(timing.round_s / per_call_s, timing.min_iterations, timing.max_iterations))
    names = list(sessions)
    rounds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(timing.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            rounds[name].append(float(np.median(_time_calls(sessions[name], x, iters[name]))))
    return {"round_medians_ms": rounds, "iterations_per_round": iters, "rounds": timing.rounds}


def median_ms(result: dict[str, Any], name: str) -> float:
    return float(np.median(result["round_medians_ms"][name]))


def round_ratios(result: dict[str, Any], num: str, den: str) -> np.ndarray:
    return np.asarray(result["round_medians_ms"][num]) / np.asarray(result["round_medians_ms"][den])


def ratio(result: dict[str, Any], num: str, den: str) -> tuple[float, float, float]:
    """Median over rounds of num/den (same-round medians), with the interquartile range of those quotients."""
    r = round_ratios(result, num, den)
    return float(np.median(r)), float(np.percentile(r, 25)), float(np.percentile(r, 75))


def run_child(artifacts: dict[str, Path], input_shape: tuple[int, ...], threads: int, timing: Timing,
              runner_copy: str | None = None, seed: int = 0, timeout_s: float = 1800) -> dict[str, Any]:
    """Time `artifacts` (name -> .tflite/.xml/.onnx) interleaved, in a fresh process with `threads` threads.

    `runner_copy`: also time that artifact exactly as the runner's session.run does, as NAME + "_runner".
    """
    job = {"artifacts": {k: str(v) for k, v in artifacts.items()}, "input_shape": list(input_shape),
           "threads": threads, "seed": seed, "timing": timing.__dict__, "runner_copy": runner_copy}
    done = run_module("bench.measure", [], timeout_s=timeout_s, path=[ROOT], stdin=json.dumps(job), cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"timing child failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child() -> int:
    job = json.loads(sys.stdin.read())
    from targets.runner import open_session

    x = np.random.default_rng(job["seed"]).uniform(-1, 1, (1, *job["input_shape"])).astype(np.float32)
    sessions = {name: _native(open_session(Path(p), job["threads"]), x) for name, p in job["artifacts"].items()}
    if job.get("runner_copy"):
        name = job["runner_copy"]
        sessions[name + "_runner"] = open_session(Path(job["artifacts"][name]), job["threads"])
    result = interleaved(sessions, x, Timing(**job["timing"]))
    result["runtimes"] = {name: s.runtime for name, s in sessions.items()}
    result["threads"] = job["threads"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child())

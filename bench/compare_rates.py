"""How often `edgepipe bench compare` cries wolf, and how often it catches a real slowdown, on this host.

    python -m bench.compare_rates [--trials 50] [--out BENCHMARKS-compare.md]

Models: ONNX MLPs (x (1, 64) -> MatMul -> Relu -> MatMul -> Relu -> MatMul (10)) of two sizes, run by ONNX
Runtime on one thread. A candidate is the same graph plus a side branch (x @ W_side, a second output) whose
width is searched so that the candidate is 5%, 10% or 20% slower; its true slowdown is then measured once in a
long interleaved run (12,000 samples each in 120 rounds, the median of the rounds' ratios) and reported beside
the rates. The 0% candidate is the baseline's
graph with another producer name: other bytes, another content hash (compare's same-artifact rule does not
apply), the same computation.

Each trial times the pair the way `edgepipe bench compare A B` does (targets.runner_bench.against: 10 warm-up
runs, then 300 timed runs each in 20 ABBA rounds, both in one process) and the way two stored runs were timed
(apart: A's 300 runs, then B's). Each timing is read with two intervals of the candidate/baseline latency ratio
(pipeline.benchrun.compare): interleaved, "paired-rounds" (each round's ratio of block medians, the
distribution-free 95% interval of their median) and "samples" (speedup.ratio_interval: every sample resampled on
its own); apart, "blocks" (ratio_interval over 10 consecutive blocks' medians) and "samples". A flag is the whole
interval above 1 + threshold. Rates are over `--trials` trials per cell, with their Wilson 95% interval; a false
alarm is a 0% candidate flagged.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.benchrun.compare import BLOCKS, ROUNDS, SAMPLES, latency_verdict, round_ratios
from pipeline.measure.intervals import wilson
from targets import runner, runner_bench

ROOT = Path(__file__).resolve().parents[1]
SLOWDOWNS = (0.0, 0.05, 0.10, 0.20)
THRESHOLDS = (0.0, 0.02, 0.05)
WIDTHS = {"small": 256, "medium": 1024}
ITERATIONS, WARMUP, ROUNDS_N = 300, 10, 20


def mlp(path: Path, width: int, side: int = 0, producer: str = "edgepipe-bench") -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [(64, width), (width, width), (width, 10)]
    inits = [numpy_helper.from_array(rng.normal(size=d).astype(np.float32) / 8, f"w{i}") for i, d in enumerate(dims)]
    nodes, last = [], "x"
    for i in range(3):
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [f"h{i}"]))
        last = f"h{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    outputs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["N", 10])]
    if side:
        inits.append(numpy_helper.from_array(rng.normal(size=(64, side)).astype(np.float32), "ws"))
        nodes.append(helper.make_node("MatMul", ["x", "ws"], ["side"]))
        outputs.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, ["N", side]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name=producer)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def interleaved(a: Path, b: Path, iterations: int = ITERATIONS, rounds: int = ROUNDS_N) -> tuple[list[float], list[float]]:
    out = runner_bench.against(a, b, None, runner.Bench(WARMUP, iterations, 1), rounds)
    return out["latency_samples_ms"][0], out["latency_samples_ms"][1]


def apart(a: Path, b: Path) -> tuple[list[float], list[float]]:
    """A then B, each in its own session, as two stored runs would have been measured."""
    samples = []
    for path in (a, b):
        session = runner.open_session(path, 1)
        samples.append(runner.measure(session, runner.zeros_feed(path), WARMUP, ITERATIONS, 1)[1])
    return samples[0], samples[1]


def paired_ratio(a: Path, b: Path, iterations: int, rounds: int) -> float:
    """The median over interleaved rounds of B's round median / A's: robust to the host's load bursts."""
    base, cand = interleaved(a, b, iterations=iterations, rounds=rounds)
    return float(np.median(round_ratios(base, cand, rounds)))


def true_ratio(a: Path, b: Path) -> float:
    return paired_ratio(a, b, 12000, 120)


def candidate_for(base: Path, width: int, target: float, folder: Path) -> tuple[Path, float]:
    """The side-branch width whose candidate is about `target` slower (bisection on a quick ratio), and the
    candidate's true ratio."""
    if target == 0.0:
        twin = mlp(folder / f"w{width}-same.onnx", width, producer="edgepipe-bench-twin")
        return twin, true_ratio(base, twin)
    lo, hi = 1, 8192
    for _ in range(9):
        mid = int(np.sqrt(lo * hi))
        cand = mlp(folder / "probe.onnx", width, side=mid)
        if paired_ratio(base, cand, 3000, 30) < 1.0 + target:
            lo = mid
        else:
            hi = mid
    side = int(np.sqrt(lo * hi))
    cand = mlp(folder / f"w{width}-side{side}.onnx", width, side=side)
    return cand, true_ratio(base, cand)


def rate(flags: list[bool]) -> str:
    k, n = sum(flags), len(flags)
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({lo:.0%}-{hi:.0%})"


METHODS = (("interleaved", ROUNDS), ("interleaved", SAMPLES), ("apart", BLOCKS), ("apart", SAMPLES))


def trial_verdicts(base: Path, cand: Path) -> dict[tuple[str, str], object]:
    """One trial of each timing: interleaved (one measurement, two intervals) and apart (likewise)."""
    b, c = interleaved(base, cand)
    out = {("interleaved", m): latency_verdict(b, c, 0.05, True, False, m, ROUNDS_N) for m in (ROUNDS, SAMPLES)}
    b, c = apart(base, cand)
    out.update({("apart", m): latency_verdict(b, c, 0.05, False, False, m) for m in (BLOCKS, SAMPLES)})
    return out


def run(trials: int) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-compare-") as tmp:
        folder = Path(tmp)
        for name, width in WIDTHS.items():
            base = mlp(folder / f"w{width}.onnx", width)
            median = float(np.median(interleaved(base, base)[0]))
            for target in SLOWDOWNS:
                cand, truth = candidate_for(base, width, target, folder)
                found: dict = {k: [] for k in METHODS}
                for _ in range(trials):
                    for k, v in trial_verdicts(base, cand).items():
                        found[k].append(v)
                for (mode, method), verdicts in found.items():
                    cells = [rate([v.lo > 1.0 + t for v in verdicts]) for t in THRESHOLDS]
                    widths = np.median([v.hi - v.lo for v in verdicts])
                    lines.append(f"| {name} ({median:.3f} ms) | {target:.0%} | {truth - 1:+.1%} | {mode} | {method} | "
                                 + " | ".join(cells) + f" | {widths:.3f} |")
                    print(lines[-1], flush=True)
    return lines


def cpu_line() -> str:
    info = runner.cpu_info()
    flags = ", ".join(f for f in info["features"] if f in ("avx2", "avx512", "avx512_vnni", "avx_vnni", "amx"))
    return f"{info['model'] or platform.processor()} ({info['arch']}; {flags})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS-compare.md")
    a = p.parse_args()
    start = time.monotonic()
    import onnxruntime as ort

    rows = run(a.trials)
    head = ("| model (median) | slowdown built | true slowdown | timing | interval | flagged at 0% | flagged at 2% | "
            "flagged at 5% (default) | interval width |")
    text = "\n".join([
        "# `bench compare`: false alarms and detection", "",
        f"Written by `python -m bench.compare_rates --trials {a.trials}` on "
        f"{datetime.now(timezone.utc).date()}, {cpu_line()}, one thread, ONNX Runtime {ort.__version__}, "
        f"in {(time.monotonic() - start) / 60:.0f} minutes on a shared host. What it measures: the docstring of "
        "`bench/compare_rates.py`. A flag is the ratio's whole 95% interval above 1 + threshold; the 0% rows are "
        "false alarms, the others detections (rate with its Wilson 95% interval); `interval width` is the "
        "median width of the ratio's interval.", "",
        head, "|---|---|---|---|---|---|---|---|---|", *rows, ""])
    a.out.write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""What a per-op profile says (the host's reading of targets/runner_profile.py's output): each op's share of the
profiled total, the ops grouped by type and precision, whether the ops add up to the whole model's time, and
how much the profiler itself slowed the model down.

Two whole-model times are read against the per-op sum, neither derived from the ops:

- the runtime's own whole-inference time in the profiled inferences (`runtime_ms`: OpenVINO's
  InferRequest.latency, ONNX Runtime's model_run events, LiteRT's Invoke events): the same inferences and the
  same clock as the op times, without the Python binding's per-call cost, which is no op's. The issue's 20% check
  (`adds_up`) is against this one: anything the runtime spent outside its ops, its profiler's bookkeeping
  included, shows as a shortfall;
- the end-to-end median latency `edgepipe bench` measured without the profiler (`coverage`): what a caller
  sees, per-call cost included; where the profiler slows each op, the ops' sum exceeds it.
"""

from __future__ import annotations

from typing import Any

# the per-op sum accounts for the whole-model time when within this of it
COVERAGE_TOLERANCE = 0.20


def summarize(cell: dict[str, Any]) -> None:
    """Add `share` to each op, and `by_type`, `fell_back`, `coverage` (per-op sum / the median latency measured
without the profiler), `coverage_profiled` (per-op sum / the median profiled inference, timed around the call),
`coverage_runtime` (per-op sum / the runtime's own time for the profiled inference), `coverage_runtime_unprofiled`
(per-op sum / the runtime's own time with the profiler off, where it has one), `adds_up` (coverage_runtime within
COVERAGE_TOLERANCE of 1; None without a runtime time), `profiler_slowdown` and `reading` to cell["profile"]."""
    prof = cell["profile"]
    ops = [o for o in prof.get("ops", []) if isinstance(o, dict)]
    total = float(prof.get("total_ms") or 0.0)
    for o in ops:
        o["share"] = (float(o["ms"]) / total) if total > 0 and o.get("ms") is not None else None
    prof["by_type"] = by_type(ops, total)
    prof["fell_back"] = sorted({o["type"] for o in ops if o.get("precision") in ("float32", "bfloat16", "float16")})
    median = float((cell.get("latency_ms") or {}).get("median") or 0.0)
    keys = ("coverage", "coverage_profiled", "coverage_runtime", "coverage_runtime_unprofiled", "adds_up",
            "profiler_slowdown")
    if not prof.get("available") or median <= 0 or prof.get("total_ms") is None:
        prof.update(dict.fromkeys(keys))
        prof["reading"] = prof.get("reason") or "no per-op times"
        return
    prof["coverage"] = total / median
    run = prof.get("profiled_run_ms")
    prof["profiler_slowdown"] = (float(run) / median) if run else None
    prof["coverage_profiled"] = (total / float(run)) if run else None  # of the inferences the ops were timed in
    own, unprofiled = prof.get("runtime_ms"), prof.get("runtime_unprofiled_ms")
    prof["coverage_runtime"] = (total / float(own)) if own else None
    prof["coverage_runtime_unprofiled"] = (total / float(unprofiled)) if unprofiled else None
    prof["adds_up"] = within(prof["coverage_runtime"]) if own else None
    prof["reading"] = reading(prof)


def within(coverage: float) -> bool:
    return abs(coverage - 1.0) <= COVERAGE_TOLERANCE


def by_type(ops: list[dict[str, Any]], total: float) -> list[dict[str, Any]]:
    """One row per (op type, precision): count, ms per inference and share; largest first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for o in ops:
        key = (str(o.get("type")), str(o.get("precision")))
        g = groups.setdefault(key, {"type": key[0], "precision": key[1], "count": 0, "ms": None, "share": None})
        g["count"] += 1
        if o.get("ms") is not None:
            g["ms"] = (g["ms"] or 0.0) + float(o["ms"])
    for g in groups.values():
        g["share"] = g["ms"] / total if g["ms"] is not None and total > 0 else None
    return sorted(groups.values(), key=lambda g: (-(g["ms"] or 0.0), g["type"]))


def reading(prof: dict[str, Any]) -> str:
    """How far the per-op times can be read as the model's time: against the runtime's own whole inference (the
    check), then against the end-to-end latency."""
    parts = []
    own = prof.get("coverage_runtime")
    if own is not None:
        verdict = "within" if within(own) else "not within"
        parts.append(f"the ops add up to {own:.0%} of the runtime's own whole inference ({prof.get('runtime_ms_source')}, "
                     f"profiler on): {verdict} {COVERAGE_TOLERANCE:.0%}")
    unprofiled = prof.get("coverage_runtime_unprofiled")
    if unprofiled is not None:
        parts.append(f"{unprofiled:.0%} of it with the profiler off")
    parts.append(end_to_end(prof["coverage"], prof.get("profiler_slowdown")))
    if prof.get("note"):
        parts.append(str(prof["note"]))
    return "; ".join(parts)


def end_to_end(coverage: float, slowdown: float | None) -> str:
    """The per-op sum against the end-to-end latency measured without the profiler."""
    head = f"{coverage:.0%} of the end-to-end median latency (measured without the profiler)"
    if within(coverage):
        return head
    if coverage < 1.0:
        return head + ": the rest is per-call cost (the Python binding, input binding, scheduling), not an op's"
    cost = f" (the profiler slowed each call {slowdown:.1f}x)" if slowdown else ""
    return head + f"{cost}: the profiler's own cost per op inflates the times; read the shares, not the milliseconds"

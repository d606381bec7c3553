"""What a per-op profile says (the host's reading of targets/runner_profile.py's output): each op's share of the
profiled total, the ops grouped by type and precision, whether the ops add up to the whole model's time, and
how much the profiler itself slowed the model down.

The per-op sum is read against whole-model times that are measured, never derived from the ops:

- the check (`adds_up`, the issue's "within 20% of the measured whole-model latency") is against the model's
  latency measured without the profiler: the runtime's own time for a whole inference where it reports one
  (OpenVINO's InferRequest.latency with PERF_COUNT off: the C++ inference alone, without the Python binding's
  per-call cost, which is no op's), else the end-to-end median latency `edgepipe bench` measured (ONNX Runtime
  and LiteRT time a run only inside their profilers). `adds_up_against` names which;
- `coverage_runtime`: against the runtime's own time for the profiled inferences themselves (OpenVINO's
  InferRequest.latency, ONNX Runtime's model_run events, LiteRT's Invoke events): the same runs and clock as the
  op times; what it lacks is time the runtime spent outside its ops, its profiler's bookkeeping included;
- `coverage`: against the end-to-end median latency, per-call cost included.
"""

from __future__ import annotations

from typing import Any

# the per-op sum accounts for the whole-model latency when within this of it
COVERAGE_TOLERANCE = 0.20
_KEYS = ("coverage", "coverage_profiled", "coverage_runtime", "coverage_runtime_unprofiled", "coverage_checked",
         "adds_up", "adds_up_against", "profiler_slowdown")


def summarize(cell: dict[str, Any]) -> None:
    """Add `share` to each op, and `by_type`, `fell_back`, `coverage` (per-op sum / the median latency measured
without the profiler), `coverage_profiled` (per-op sum / the median profiled inference, timed around the call),
`coverage_runtime` (per-op sum / the runtime's own time for the profiled inference), `coverage_runtime_unprofiled`
(per-op sum / the runtime's own time with the profiler off, where it has one), `coverage_checked`, `adds_up` and
`adds_up_against` (the check: see the module docstring), `profiler_slowdown` and `reading` to cell["profile"]."""
    prof = cell["profile"]
    ops = [o for o in prof.get("ops", []) if isinstance(o, dict)]
    total = float(prof.get("total_ms") or 0.0)
    for o in ops:
        o["share"] = (float(o["ms"]) / total) if total > 0 and o.get("ms") is not None else None
    prof["by_type"] = by_type(ops, total)
    prof["fell_back"] = sorted({o["type"] for o in ops if o.get("precision") in ("float32", "bfloat16", "float16")})
    median = float((cell.get("latency_ms") or {}).get("median") or 0.0)
    if not prof.get("available") or median <= 0 or prof.get("total_ms") is None:
        prof.update(dict.fromkeys(_KEYS))
        prof["reading"] = prof.get("reason") or "no per-op times"
        return
    prof["coverage"] = total / median
    run = prof.get("profiled_run_ms")
    prof["profiler_slowdown"] = (float(run) / median) if run else None
    prof["coverage_profiled"] = (total / float(run)) if run else None  # of the inferences the ops were timed in
    own, unprofiled = prof.get("runtime_ms"), prof.get("runtime_unprofiled_ms")
    prof["coverage_runtime"] = (total / float(own)) if own else None
    prof["coverage_runtime_unprofiled"] = (total / float(unprofiled)) if unprofiled else None
    if unprofiled:
        against, checked = f"the runtime's own latency without the profiler ({prof.get('runtime_ms_source')})", \
            prof["coverage_runtime_unprofiled"]
    else:
        against, checked = "the end-to-end latency without the profiler", prof["coverage"]
    prof["coverage_checked"], prof["adds_up"], prof["adds_up_against"] = checked, within(checked), against
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
    """How far the per-op times can be read as the model's time: the check first, then the other readings."""
    checked = prof["coverage_checked"]
    parts = [f"the ops add up to {checked:.0%} of {prof['adds_up_against']}: "
             f"{'within' if prof['adds_up'] else 'not within'} {COVERAGE_TOLERANCE:.0%}"]
    own = prof.get("coverage_runtime")
    if own is not None:
        parts.append(f"{own:.0%} of the runtime's own time for the profiled inferences ({prof.get('runtime_ms_source')})")
    if prof.get("coverage_runtime_unprofiled") is not None:
        parts.append(end_to_end(prof["coverage"], prof.get("profiler_slowdown")))
    elif not prof["adds_up"]:
        parts.append(why(prof["coverage"], prof.get("profiler_slowdown")))
    if prof.get("note"):
        parts.append(str(prof["note"]))
    return "; ".join(parts)


def end_to_end(coverage: float, slowdown: float | None) -> str:
    """The per-op sum against the end-to-end latency measured without the profiler."""
    head = f"{coverage:.0%} of the end-to-end latency"
    return head if within(coverage) else f"{head}: {why(coverage, slowdown)}"


def why(coverage: float, slowdown: float | None) -> str:
    if coverage < 1.0:
        return "the rest is per-call cost (the Python binding, input binding, scheduling) or time no op reports"
    cost = f" (the profiler slowed each call {slowdown:.1f}x)" if slowdown else ""
    return f"the profiler's own cost per op inflates the times{cost}; read the shares, not the milliseconds"

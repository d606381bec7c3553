"""What a per-op profile says (the host's reading of targets/runner_profile.py's output): each op's share of the
profiled total, the ops grouped by type and precision, how much of the measured latency the ops account for,
and how much the profiler itself slowed the model down."""

from __future__ import annotations

from typing import Any

# the per-op sum is read against the latency measured without the profiler: within this, it accounts for it
COVERAGE_TOLERANCE = 0.20


def summarize(cell: dict[str, Any]) -> None:
    """Add `share` to each op, and `by_type`, `fell_back`, `coverage` (per-op sum / the median latency measured
without the profiler), `coverage_profiled` (per-op sum / the median profiled inference), `profiler_slowdown` and
`reading` to cell["profile"]."""
    prof = cell["profile"]
    ops = [o for o in prof.get("ops", []) if isinstance(o, dict)]
    total = float(prof.get("total_ms") or 0.0)
    for o in ops:
        o["share"] = (float(o["ms"]) / total) if total > 0 and o.get("ms") is not None else None
    prof["by_type"] = by_type(ops, total)
    prof["fell_back"] = sorted({o["type"] for o in ops if o.get("precision") in ("float32", "bfloat16", "float16")})
    median = float((cell.get("latency_ms") or {}).get("median") or 0.0)
    if not prof.get("available") or total <= 0 or median <= 0:
        prof["coverage"] = prof["coverage_profiled"] = prof["profiler_slowdown"] = None
        prof["reading"] = prof.get("reason") or "no per-op times"
        return
    prof["coverage"] = total / median
    run = prof.get("profiled_run_ms")
    prof["profiler_slowdown"] = (float(run) / median) if run else None
    prof["coverage_profiled"] = (total / float(run)) if run else None  # of the inferences the ops were timed in
    prof["reading"] = reading(prof["coverage"], prof["profiler_slowdown"])


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


def reading(coverage: float, slowdown: float | None) -> str:
    """How far the per-op times can be read as the model's time."""
    if abs(coverage - 1.0) <= COVERAGE_TOLERANCE:
        return f"the ops add up to {coverage:.0%} of the measured median latency"
    if coverage < 1.0:
        return (f"the ops add up to {coverage:.0%} of the measured median latency: the rest is the runtime's "
                "per-call cost (the Python binding, input binding, scheduling), not an op's")
    cost = f" (the profiler slowed each inference {slowdown:.1f}x)" if slowdown else ""
    return (f"the ops add up to {coverage:.0%} of the measured median latency{cost}: the profiler's own cost per "
            "op inflates the times; read the shares, not the milliseconds")

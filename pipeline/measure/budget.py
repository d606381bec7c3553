"""Budgets: what an int8 artifact must meet for the build to pass."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import BudgetSection


@dataclass(frozen=True)
class Measured:
    accuracy_drop: float | None
    latency_ms: float | None  # median
    size_bytes: int | None


def check(budget: BudgetSection, m: Measured) -> list[str]:
    """One message per violated budget; empty when everything is met."""
    out = []
    if budget.max_accuracy_drop is not None and m.accuracy_drop is not None:
        if m.accuracy_drop > budget.max_accuracy_drop + 1e-9:
            out.append(f"accuracy drop {m.accuracy_drop:.4f} > max_accuracy_drop {budget.max_accuracy_drop}")
    if budget.max_metric_drop is not None and m.accuracy_drop is not None:  # the drop in the metric's units
        if m.accuracy_drop > budget.max_metric_drop + 1e-9:
            out.append(f"metric drop {m.accuracy_drop:.4g} > max_metric_drop {budget.max_metric_drop}")
    if budget.max_latency_ms is not None and m.latency_ms is not None:
        if m.latency_ms > budget.max_latency_ms:
            out.append(f"median latency {m.latency_ms:.3f} ms > max_latency_ms {budget.max_latency_ms}")
    if budget.max_size_kb is not None and m.size_bytes is not None:
        if m.size_bytes / 1024 > budget.max_size_kb:
            out.append(f"size {m.size_bytes / 1024:.1f} KB > max_size_kb {budget.max_size_kb}")
    return out

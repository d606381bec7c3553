"""What a search optimizes: the objectives, their directions, a trial's metrics and the Pareto front."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config import Config

DIRECTIONS: tuple[Literal["maximize", "minimize"], ...] = ("maximize", "minimize", "minimize")
METRICS = ("accuracy", "latency_ms", "size_bytes")


@dataclass(frozen=True)
class SearchRequest:
    config: Config
    out: Path
    trials: int  # COMPLETE trials the study should hold; each worker stops when it does
    storage: str | None  # an Optuna RDB URL; None: sqlite:///<out>/study.db
    study: str


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    latency_ms: float
    size_bytes: int
    accuracy_drop: float | None = None

    def values(self) -> tuple[float, float, float]:
        return (self.accuracy, self.latency_ms, float(self.size_bytes))


def dominates(a: Metrics, b: Metrics) -> bool:
    """`a` is no worse than `b` in every objective and better in one (accuracy up, latency and size down)."""
    no_worse = a.accuracy >= b.accuracy and a.latency_ms <= b.latency_ms and a.size_bytes <= b.size_bytes
    better = a.accuracy > b.accuracy or a.latency_ms < b.latency_ms or a.size_bytes < b.size_bytes
    return no_worse and better


def pareto_flags(points: Sequence[Metrics]) -> list[bool]:
    """True for each point that no other point dominates (equal points are all on the front)."""
    return [not any(dominates(q, p) for q in points) for p in points]

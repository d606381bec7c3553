"""What a search optimizes: the objectives, their directions, a trial's metrics and the Pareto front."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config import Config

Direction = Literal["maximize", "minimize"]
METRICS = ("accuracy", "latency_ms", "size_bytes")  # "accuracy": the task's metric (named by [metric])


def metric_higher_is_better(config: Config) -> bool:
    """The direction of the task's metric: accuracy and the scores go up, errors (mse, mae, rmse) go down."""
    from targets.runner_metrics import HIGHER_IS_BETTER

    m = config.metric
    if m is None:
        return True
    if m.function is not None:
        return bool(m.higher_is_better)
    return HIGHER_IS_BETTER[m.name.value if m.name is not None else "accuracy"]


def metric_label(config: Config) -> str:
    """The task metric's name as the report shows it."""
    m = config.metric
    if m is None:
        return "accuracy"
    return m.function if m.function is not None else (m.name.value if m.name is not None else "accuracy")


def directions(higher_is_better: bool) -> tuple[Direction, Direction, Direction]:
    """Optuna's directions for (metric, latency, size)."""
    return ("maximize" if higher_is_better else "minimize", "minimize", "minimize")


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
    higher_is_better: bool = True  # of `accuracy`, the task's metric

    def metric_better(self, other: Metrics) -> bool:
        """This metric value is strictly better than `other`'s, in the metric's direction."""
        return self.accuracy > other.accuracy if self.higher_is_better else self.accuracy < other.accuracy

    def values(self) -> tuple[float, float, float]:
        return (self.accuracy, self.latency_ms, float(self.size_bytes))


def dominates(a: Metrics, b: Metrics) -> bool:
    """`a` is no worse than `b` in every objective and better in one (the metric in its direction, latency
    and size down)."""
    no_worse = not b.metric_better(a) and a.latency_ms <= b.latency_ms and a.size_bytes <= b.size_bytes
    better = a.metric_better(b) or a.latency_ms < b.latency_ms or a.size_bytes < b.size_bytes
    return no_worse and better


def pareto_flags(points: Sequence[Metrics]) -> list[bool]:
    """True for each point that no other point dominates (equal points are all on the front)."""
    return [not any(dominates(q, p) for q in points) for p in points]

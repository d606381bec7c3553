"""A model's metric on one split with the per-sample statistics that a paired drop interval needs, and the
report's `metric` entry built from two of them (the reference's and an artifact's, on the same samples)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.measure.metric import Metric
from pipeline.report.schema import DropMetric
from targets import runner_metrics

LEVEL = 0.95  # the drop's interval is always reported at this level unless [budget] confidence sets another
SPLIT_NAMES = {"test": "test", "val": "validation"}
REFERENCE_SCORES_REL = "data/reference_scores.npz"  # the reference's per-sample statistics on the test split


@dataclass(frozen=True)
class Scores:
    """The metric's value on a split, its per-sample statistics (None for a user's function), the labels."""

    value: float
    per_sample: np.ndarray | None
    y: np.ndarray
    split: str  # "test" | "validation"

    @property
    def samples(self) -> int:
        return int(len(self.y))


def scores_of(outputs: np.ndarray, y: np.ndarray, metric: Metric, x: Any, split: str) -> Scores:
    """The metric of `outputs` against `y` (x: the inputs, for reconstruction_auc) with its per-sample stats."""
    from pipeline.inputs.models import metric_value

    value = metric_value(outputs, y, metric.spec, x)
    stats = runner_metrics.per_sample(outputs, y, metric.spec, None if isinstance(x, dict) else x)
    return Scores(value, None if stats is None else np.asarray(stats), np.asarray(y), SPLIT_NAMES.get(split, split))


def metric_entry(metric: Metric, reference: Scores | None, value: float | None, per_sample: Any,
                 level: float = LEVEL) -> tuple[DropMetric, Any]:
    """The report's `metric`: name, value, drop against the reference on the same samples, the drop's paired
    interval at `level` (None without per-sample statistics), higher_is_better, samples, split; and the
    intervals.DropInterval it came from (None without one)."""
    fields: dict[str, Any] = {"name": metric.name, "value": value, "drop": None, "interval": None, "level": level,
                              "method": None, "higher_is_better": metric.higher_is_better,
                              "samples": None if reference is None else reference.samples,
                              "split": None if reference is None else reference.split, "uncertain": False,
                              "reference_value": None if reference is None else reference.value}
    iv = None
    if reference is not None and value is not None:
        fields["drop"] = metric.drop(reference.value, value)
        iv = _paired(metric, reference, per_sample, level)
    if iv is not None:
        fields.update(interval=[round(float(iv.lo), 6), round(float(iv.hi), 6)], method=iv.method,
                      discordant=iv.discordant)
    return DropMetric(**fields), iv


def _paired(metric: Metric, reference: Scores, per_sample: Any, level: float) -> Any:
    """The drop's paired interval (intervals.DropInterval), None without per-sample statistics on both sides or
    when they are not the same samples."""
    from pipeline.measure.intervals import drop_interval

    if reference.per_sample is None or per_sample is None:
        return None
    art = np.asarray(per_sample)
    if len(art) != len(reference.per_sample):  # not the same samples: no paired interval
        return None
    return drop_interval(reference.per_sample, art, reference.y, metric.spec, metric.higher_is_better, level)


def save_scores(path: Path, scores: Scores) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, value=np.float64(scores.value), per_sample=np.asarray(scores.per_sample), y=scores.y,
             split=np.asarray(scores.split))


def load_scores(path: Path) -> Scores | None:
    """What save_scores wrote; None when the run has no such file (an older run, or a user's metric function)."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as d:
        return Scores(float(d["value"]), np.asarray(d["per_sample"]), np.asarray(d["y"]), str(d["split"]))

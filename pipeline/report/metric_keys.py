"""The report's metric keys. Inside a build every entry carries the task's metric in its `accuracy`,
`float_accuracy` and `accuracy_drop` keys; report.json names them for the task: with a `[metric]`, each
entry also has `metric_value`, `float_metric_value` and `metric_drop`, and for a metric that is not
accuracy the accuracy keys are null (a regressor has no accuracy)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

KEYS = (("accuracy", "metric_value"), ("float_accuracy", "float_metric_value"), ("accuracy_drop", "metric_drop"))


def _entries(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every dict of the report that carries a metric value."""
    yield report.get("reference") or {}
    yield from report.get("stages") or []
    for t in (report.get("targets") or {}).values():
        yield t
        if isinstance(t.get("int8"), dict):
            yield t["int8"]
        yield from t.get("attempts") or []
        yield from t.get("sensitivity") or []
        yield from t.get("precision_candidates") or []


def to_document(report: dict[str, Any]) -> dict[str, Any]:
    """The report as written: metric keys named for the task (a copy; the build's form is unchanged)."""
    metric = report.get("metric")
    if not metric:
        return report
    out = copy.deepcopy(report)
    mirror = metric.get("name") == "accuracy"
    for entry in _entries(out):
        for old, new in KEYS:
            if old in entry:
                entry[new] = entry[old] if mirror else entry.pop(old)
                if not mirror:
                    entry[old] = None
    return out


def from_document(report: dict[str, Any]) -> dict[str, Any]:
    """The build's form of a report read back (the metric's values in the accuracy keys)."""
    if not report.get("metric"):
        return report
    for entry in _entries(report):
        for old, new in KEYS:
            if new in entry:
                entry[old] = entry.pop(new)
    return report


def label(report: dict[str, Any]) -> str:
    """What the terminal table and report.html call the metric."""
    metric = report.get("metric") or {}
    return str(metric.get("name") or "accuracy")

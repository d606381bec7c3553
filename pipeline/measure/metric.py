"""The task's metric: which one (config `[metric]`, or accuracy for a classifier), its direction, what labels
it needs, and how a drop is counted (in its worse direction). The numbers come from targets.runner.score."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pipeline.config import MetricName, MetricSection
from pipeline.errors import ConfigError
from targets.runner_metrics import HIGHER_IS_BETTER


class Labels(str, Enum):
    """What `y` must hold for the metric."""

    CLASSES = "classes"  # integer class ids (accuracy, top_k)
    TARGETS = "targets"  # float targets of the output's shape (mse, mae, rmse)
    BINARY = "binary"  # 0 = normal, 1 = anomalous (reconstruction_auc)
    REFERENCE = "reference"  # none: the reference model's own outputs are the target (sqnr, agreement)
    ANY = "any"  # a user's function takes y as given


_LABELS = {MetricName.ACCURACY: Labels.CLASSES, MetricName.TOP_K: Labels.CLASSES, MetricName.MSE: Labels.TARGETS,
           MetricName.MAE: Labels.TARGETS, MetricName.RMSE: Labels.TARGETS,
           MetricName.RECONSTRUCTION_AUC: Labels.BINARY, MetricName.SQNR: Labels.REFERENCE,
           MetricName.AGREEMENT: Labels.REFERENCE}


@dataclass(frozen=True)
class Metric:
    name: str  # what the report calls it
    spec: str  # targets.runner_metrics spec string, what every runtime computes
    higher_is_better: bool
    labels: Labels
    output: str | None = None  # the output it reads, for a model with several (`[metric] output`, default the first)
    output_index: int = 0  # that output's position in the model's outputs

    @property
    def is_accuracy(self) -> bool:
        return self.spec == "accuracy"

    def drop(self, reference: float, value: float) -> float:
        """How much worse `value` is than `reference`, in the metric's units (negative: better)."""
        return round((reference - value) if self.higher_is_better else (value - reference), 6)

    def to_report(self) -> dict[str, Any]:
        entry = {"name": self.name, "higher_is_better": self.higher_is_better, "spec": self.spec,
                 "labels": self.labels.value}
        if self.output is not None:
            entry.update(output=self.output, output_index=self.output_index)
        return entry

    @classmethod
    def from_report(cls, entry: dict[str, Any] | None) -> Metric:
        """The metric a report was built with (accuracy when it has none)."""
        if not entry:
            return ACCURACY
        output = entry.get("output")
        return cls(str(entry["name"]), str(entry.get("spec", entry["name"])), bool(entry["higher_is_better"]),
                   Labels(entry.get("labels", Labels.ANY.value)), None if output is None else str(output),
                   int(entry.get("output_index", 0)))


ACCURACY = Metric("accuracy", "accuracy", True, Labels.CLASSES)


def is_classifier(input_shape: tuple[int | None, ...], output_shape: tuple[int | None, ...]) -> bool:
    """Class scores: one axis of two or more per sample, and not a reconstruction of the input."""
    return len(output_shape) == 1 and (output_shape[0] or 0) >= 2 and tuple(output_shape) != tuple(input_shape)


def _class_ids(y: Any) -> bool:
    """Labels that are class ids: integers per sample (or one-hot rows)."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return bool(np.all(np.isin(y, (0, 1))))
    return y.dtype.kind in "biuf" and y.size > 0 and bool(np.all(np.mod(y.astype(np.float64), 1) == 0))


def _check_function(spec: str, where: str) -> None:
    """The user's metric function is importable and callable (it is their code, named in their config)."""
    import importlib

    module, _, attr = spec.rpartition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as err:
        raise ConfigError(f"{where}: [metric] function {spec}: cannot import it ({type(err).__name__}: {err})") from None
    if not callable(fn):
        raise ConfigError(f"{where}: [metric] function {spec} is not callable")


def resolve_metric(section: MetricSection | None, input_shape: tuple[int | None, ...],
                   output_shape: tuple[int | None, ...], where: str, output_names: tuple[str, ...] = (),
                   labels: Any = None) -> Metric:
    """The metric a build judges by; a model that is not a classifier needs `[metric]` (ConfigError)."""
    if section is not None and section.output is not None and section.output not in output_names:
        raise ConfigError(f"{where}: [metric] output {section.output!r} is not an output of the model "
                          f"(outputs: {', '.join(output_names) or 'unnamed'})")
    classifier = is_classifier(input_shape, output_shape)
    if section is None:
        if not classifier or (labels is not None and not _class_ids(labels)):
            shown = "x".join("?" if d is None else str(d) for d in output_shape) or "a scalar"
            raise ConfigError(f"{where}: the model (output {shown}) is not a classifier with class-id labels: set "
                              "[metric] (name = \"mse\", \"reconstruction_auc\", \"sqnr\", ...) to say how to judge it")
        return ACCURACY
    if section.function is not None:
        assert section.higher_is_better is not None
        _check_function(section.function, where)
        return Metric(f"function:{section.function}", f"function:{section.function}", section.higher_is_better,
                      Labels.ANY)
    name = section.name
    assert name is not None
    spec = name.value
    if name is MetricName.TOP_K:
        spec = f"top_k:{section.k}"
        if not classifier or (section.k or 0) > (output_shape[0] or 0):
            raise ConfigError(f"{where}: top_k with k = {section.k} needs a classifier with at least k outputs")
    elif name is MetricName.AGREEMENT:
        spec = "agreement:top1" if classifier else "agreement:cosine"
    elif name is MetricName.RECONSTRUCTION_AUC and tuple(input_shape) != tuple(output_shape):
        raise ConfigError(f"{where}: reconstruction_auc needs an output of the input's shape "
                          f"({input_shape} vs {output_shape}): a model that reconstructs its input")
    elif name is MetricName.ACCURACY and not classifier:
        raise ConfigError(f"{where}: accuracy needs a classifier (an output of two or more class scores)")
    return Metric(name.value, spec, HIGHER_IS_BETTER[name.value], _LABELS[name])

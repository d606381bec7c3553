"""The compression stage interface: Keras model in, smaller Keras model out.

The runner owns caching (content hash of input model, stage name, version and config), saving
`stages/<name>/model.keras`, and measuring params/MACs/size/accuracy/latency. A stage only transforms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import keras

    from pipeline.inputs.arrays import Samples


@dataclass(frozen=True)
class TrainData:
    """Preprocessed training and test splits in the model's input layout; labels as the metric needs them (int64
    class ids for a classifier)."""

    x_train: Samples  # an ndarray, or a lazy array read a batch at a time (pipeline.inputs.arrays)
    y_train: np.ndarray
    x_test: Samples
    y_test: np.ndarray
    num_classes: int


@dataclass(frozen=True)
class StageContext:
    data: TrainData
    teacher: keras.Model
    seed: int = 0
    # What the task's metric reads as labels (pipeline.measure.metric.Labels values): "classes" for a classifier
    # (logits distillation, cross-entropy); "targets", "binary" (an autoencoder) or "reference" train with MSE.
    labels: str = "classes"
    # Returns Keras callbacks that show training progress under a label; may return [].
    progress_callbacks: Callable[[str, int], list[Any]] = field(default=lambda label, epochs: [])


@dataclass(frozen=True)
class StageResult:
    model: keras.Model
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    name: str
    version: str

    def config_dict(self) -> dict[str, Any]:
        """The settings that change the output; part of the cache key."""
        ...

    def run(self, model: keras.Model, ctx: StageContext) -> StageResult: ...

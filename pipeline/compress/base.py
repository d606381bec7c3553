"""The compression stage interface: Keras model in, smaller Keras model out.

The runner owns caching (content hash of input model, stage name, version and config), saving
`stages/<name>/model.keras`, and measuring params/MACs/size/accuracy/latency. A stage only transforms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import keras

    from pipeline.inputs.arrays import Samples


@dataclass(frozen=True)
class TrainData:
    """Preprocessed training and test splits in the model's input layout; labels as the metric needs them (int64
    class ids for a classifier). x: {input name: array} for a model with several inputs (pipeline.inputs.named)."""

    x_train: Samples | dict[str, np.ndarray]  # an ndarray, or a lazy array read a batch at a time (pipeline.inputs.arrays)
    y_train: np.ndarray
    x_test: Samples | dict[str, np.ndarray]
    y_test: np.ndarray
    num_classes: int
    # The validation split every choice is judged on (the user's x_val, or held out of the training split:
    # pipeline.inputs.holdout); None only where no build runs (a stage tested alone).
    x_val: Samples | dict[str, np.ndarray] | None = None
    y_val: np.ndarray | None = None


def one_input(x: Samples | dict[str, np.ndarray]) -> Samples:
    """x of a model with one input: what the compression stages train (the build refuses the others)."""
    if isinstance(x, dict):
        raise TypeError("the compression stages train models with one input")
    return x


@dataclass(frozen=True)
class FitSpec:
    """How one training run goes: epochs, Adam's learning rate, batch size and seed; with `validation_split` and
    `patience`, early stopping on a seeded validation split (best epoch restored); `callbacks` see the model
    being trained as `self.model`."""

    epochs: int
    learning_rate: float
    batch_size: int
    seed: int = 0
    validation_split: float = 0.0
    patience: int | None = None
    callbacks: Sequence[Any] = ()


@dataclass(frozen=True)
class Distillation:
    """The teacher's part of a training loss: its logits (a classifier) or outputs (any other model) on the
    training samples, their weight `alpha` against the task's own target, and the softmax temperature
    (classifiers only)."""

    outputs: np.ndarray
    alpha: float = 0.7
    temperature: float = 4.0


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

"""Plain supervised training of a built-in example's teacher (the stages fine-tune with pipeline.stages.training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipeline.compress.base import FitSpec

if TYPE_CHECKING:
    import keras


def train_teacher(model: keras.Model, x: np.ndarray, y: np.ndarray, spec: FitSpec,
                  validation: tuple[np.ndarray, np.ndarray] | None = None, reconstruct: bool = False) -> keras.Model:
    """Compile with Adam and sparse cross-entropy (from logits when the model outputs logits) and fit as `spec`
    says (its validation_split and patience aside: `validation` is the validation data, when given); with
    `reconstruct`, mean squared error against `y` (an autoencoder's own input)."""
    import keras

    from pipeline.compress.training import is_softmax_output

    keras.utils.set_random_seed(spec.seed)
    if reconstruct:
        loss, metrics = keras.losses.MeanSquaredError(), []
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not is_softmax_output(model))
        metrics = ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(spec.learning_rate), loss=loss, metrics=metrics)
    model.fit(x, y, epochs=spec.epochs, batch_size=spec.batch_size, shuffle=True, verbose=0,
              validation_data=validation, callbacks=list(spec.callbacks))
    return model


"""Plain supervised training of a built-in example's teacher (the stages fine-tune with pipeline.stages.training)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras


def train_teacher(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: list[Any] | None = None,
    reconstruct: bool = False,
) -> keras.Model:
    """Compile with Adam and sparse cross-entropy (from logits when the model outputs logits) and fit; with
    `reconstruct`, mean squared error against `y` (an autoencoder's own input)."""
    import keras

    from pipeline.compress.training import is_softmax_output

    keras.utils.set_random_seed(seed)
    if reconstruct:
        loss, metrics = keras.losses.MeanSquaredError(), []
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not is_softmax_output(model))
        metrics = ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
              validation_data=validation, callbacks=callbacks or [])
    return model


"""The built-in example `digits-twohead`: a model with two inputs and two outputs on scikit-learn's digits.

Inputs `image` (8x8x1) and `halves` (the mean ink of the digit's top and bottom half); outputs `digit` (10 class
scores, judged by accuracy: `[metric] output = "digit"`) and `ink` (a regression of the image's mean intensity,
0..1). Every output is checked in every runtime against the float twin (report: targets.<t>.outputs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.inputs.data import RawData

if TYPE_CHECKING:
    import keras


def _named(x: np.ndarray, y: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    halves = np.stack([x[:, :4].mean(axis=(1, 2)), x[:, 4:].mean(axis=(1, 2))], axis=1)
    ink = (x.mean(axis=(1, 2)) / 16.0)[:, None].astype(np.float32)
    return {"image": x[..., None], "halves": halves}, {"digit": y, "ink": ink}


def load() -> RawData:
    """npz-style splits with named keys: x_train.image, x_train.halves, y_train.digit, y_train.ink."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(d.images.astype(np.float32), d.target.astype(np.int64),
                                              test_size=0.2, stratify=d.target, random_state=0)
    (xa, ya), (xb, yb) = _named(x_tr, y_tr), _named(x_te, y_te)
    return RawData(xa, ya, xb, yb, source="example:digits-twohead")


def build() -> keras.Model:
    import keras
    from keras import layers

    image, halves = keras.Input((8, 8, 1), name="image"), keras.Input((2,), name="halves")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Concatenate()([x, layers.Dense(8, activation="relu")(halves)])
    x = layers.Dense(64, activation="relu")(x)
    digit = layers.Dense(10, activation="softmax", name="digit")(x)
    ink = layers.Dense(1, name="ink")(x)
    return keras.Model([image, halves], [digit, ink], name="digits_twohead")


def train(model: keras.Model, x: Any, y: dict[str, np.ndarray], epochs: int, seed: int, callbacks: list[Any]) -> None:
    """Adam, a loss per output: cross-entropy on `digit`, mean squared error on `ink` (weighted up: its values
    are small)."""
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss={"digit": keras.losses.SparseCategoricalCrossentropy(), "ink": keras.losses.MeanSquaredError()},
                  loss_weights={"digit": 1.0, "ink": 10.0})
    model.fit(x, {"digit": y["digit"], "ink": y["ink"]}, epochs=epochs, batch_size=64, shuffle=True, verbose=0,
              callbacks=callbacks)

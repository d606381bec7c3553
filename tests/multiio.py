"""A tiny model with two inputs and two outputs, trained on scikit-learn's digits, and its npz with named keys:
inputs `image` (8x8x1) and `feats` (each half's mean ink), outputs `digit` (10 class scores) and `ink` (the
image's mean intensity, a regression)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def arrays() -> dict[str, np.ndarray]:
    """npz keys x_train.image, x_train.feats, y_train.digit, y_train.ink and the same for _test (raw 0..16)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(d.images.astype(np.float32), d.target, test_size=0.2,
                                              stratify=d.target, random_state=1)
    out: dict[str, np.ndarray] = {}
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        out[f"x_{split}.image"] = x[..., None]
        out[f"x_{split}.feats"] = np.stack([x[:, :4].mean(axis=(1, 2)), x[:, 4:].mean(axis=(1, 2))], axis=1)
        out[f"y_{split}.digit"] = y.astype(np.int64)
        out[f"y_{split}.ink"] = (x.mean(axis=(1, 2)) / 16.0)[:, None].astype(np.float32)
    return out


def model():
    import keras
    from keras import layers

    image, feats = keras.Input((8, 8, 1), name="image"), keras.Input((2,), name="feats")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    x = layers.Conv2D(24, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Concatenate()([x, layers.Dense(8, activation="relu")(feats)])
    x = layers.Dense(32, activation="relu")(x)
    digit = layers.Dense(10, activation="softmax", name="digit")(x)
    ink = layers.Dense(1, name="ink")(x)
    return keras.Model([image, feats], [digit, ink])


def write(folder: Path, epochs: int = 20) -> tuple[Path, Path]:
    """The trained model (.keras) and its npz, in `folder`."""
    import keras

    data = arrays()
    npz = folder / "twoio.npz"
    np.savez(npz, **data)
    keras.utils.set_random_seed(0)
    m = model()
    m.compile(keras.optimizers.Adam(3e-3), loss={"digit": "sparse_categorical_crossentropy", "ink": "mse"})
    x = {"image": data["x_train.image"] / 16.0, "feats": data["x_train.feats"] / 16.0}
    m.fit(x, {"digit": data["y_train.digit"], "ink": data["y_train.ink"]}, epochs=epochs, batch_size=32, verbose=0)
    path = folder / "twoio.keras"
    m.save(path)
    return path, npz

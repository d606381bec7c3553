"""Keras models whose outputs (and inputs) are dicts, trained on scikit-learn's digits with tests/multiio.py's
arrays: `digit` (10 class scores) and `ink` (the image's mean intensity), from `image` (8x8x1) and, for the
dict-input model, `feats` (each half's mean ink). Layers are left unnamed: the dict keys name the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from multiio import arrays

VAL = 300  # the dict-input npz carries its own validation split: the last VAL training samples


def _trunk(image: Any) -> Any:
    from keras import layers

    x = layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    x = layers.Conv2D(24, 3, padding="same", activation="relu")(x)
    return layers.GlobalAveragePooling2D()(x)


def output_dict_model() -> Any:
    """The issue's model: one input, outputs {"digit": ..., "ink": ...}."""
    import keras
    from keras import layers

    image = keras.Input((8, 8, 1))
    h = layers.Dense(32, activation="relu")(_trunk(image))
    return keras.Model(image, {"digit": layers.Dense(10, activation="softmax")(h), "ink": layers.Dense(1)(h)})


def input_dict_model() -> Any:
    """Inputs {"image": ..., "feats": ...}, outputs {"ink": ..., "digit": ...}: both dicts in an order other than
    their keys' (Keras orders a dict by its keys: feats, image; digit, ink)."""
    import keras
    from keras import layers

    image, feats = keras.Input((8, 8, 1), name="image"), keras.Input((2,), name="feats")
    h = layers.Concatenate()([_trunk(image), layers.Dense(8, activation="relu")(feats)])
    h = layers.Dense(32, activation="relu")(h)
    return keras.Model({"image": image, "feats": feats},
                       {"ink": layers.Dense(1)(h), "digit": layers.Dense(10, activation="softmax")(h)})


def single_key_model() -> Any:
    """One input, outputs {"digit": ...}: a dict of one."""
    import keras
    from keras import layers

    image = keras.Input((8, 8, 1))
    return keras.Model(image, {"digit": layers.Dense(10, activation="softmax")(_trunk(image))})


def _fit(model: Any, x: Any, y: dict[str, np.ndarray], epochs: int) -> Any:
    import keras

    losses = {"digit": "sparse_categorical_crossentropy", "ink": "mse"}
    model.compile(keras.optimizers.Adam(3e-3), loss={k: losses[k] for k in y})
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _labels(data: dict[str, np.ndarray], split: str, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {k: data[f"y_{split}.{k}"] for k in outputs}


def write_output_dict(folder: Path, epochs: int = 20) -> tuple[Path, Path]:
    """The trained dict-output model and its npz: x_train, y_train.digit, y_train.ink and the same for _test (the
    issue's keys; no validation split: the build holds one out)."""
    import keras

    data = arrays()
    npz = folder / "dictout.npz"
    keys = {f"x_{s}": data[f"x_{s}.image"] for s in ("train", "test")}
    np.savez(npz, **keys, **{k: v for k, v in data.items() if k.startswith("y_")})
    keras.utils.set_random_seed(0)
    model = _fit(output_dict_model(), data["x_train.image"] / 16.0, _labels(data, "train", ("digit", "ink")), epochs)
    path = folder / "dictout.keras"
    model.save(path)
    return path, npz


def write_input_dict(folder: Path, epochs: int = 30) -> tuple[Path, Path]:
    """The trained dict-input model and its npz with named keys, a validation split of its own included:
    x_val.image, x_val.feats, y_val.digit, y_val.ink (the last VAL training samples, not trained on)."""
    import keras

    data = arrays()
    for key in [k for k in data if k.endswith(tuple(f"_train.{n}" for n in ("image", "feats", "digit", "ink")))]:
        data[key.replace("_train.", "_val.")], data[key] = data[key][-VAL:], data[key][:-VAL]
    npz = folder / "dictin.npz"
    np.savez(npz, **data)
    keras.utils.set_random_seed(0)
    x = {"image": data["x_train.image"] / 16.0, "feats": data["x_train.feats"] / 16.0}
    model = _fit(input_dict_model(), x, _labels(data, "train", ("digit", "ink")), epochs)
    path = folder / "dictin.keras"
    model.save(path)
    return path, npz


def write_single_key(folder: Path, epochs: int = 15) -> tuple[Path, Path]:
    """The trained one-key dict model and its npz with plain keys x_train, y_train, x_test, y_test."""
    import keras

    data = arrays()
    npz = folder / "single.npz"
    np.savez(npz, **{f"{v}_{s}": data[f"{v}_{s}.{n}"] for v, n in (("x", "image"), ("y", "digit"))
                     for s in ("train", "test")})
    keras.utils.set_random_seed(0)
    model = _fit(single_key_model(), data["x_train.image"] / 16.0, _labels(data, "train", ("digit",)), epochs)
    path = folder / "single.keras"
    model.save(path)
    return path, npz

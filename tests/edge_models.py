"""The shapes of models shipped on edge devices, small enough for scikit-learn's 8x8 digits, trained in code, each
with outlier activation channels that leave its float function intact (as tests/outliers.py does for a plain
CNN):

- MobileNet-style: a Conv2D stem, then depthwise-separable blocks (DepthwiseConv2D and 1x1 Conv2D, each with
  BatchNorm and ReLU6), the last one a MobileNetV2 linear bottleneck (1x1 projection with BatchNorm and no
  activation, then a 1x1 expansion with ReLU6). The outliers: two channels of the projection's BatchNorm
  (gamma and beta) x FACTOR, the expansion's matching input weights / FACTOR (no activation between them).
- DS-CNN-style (keyword spotting, Zhang et al. 2017, here in 1-D): the digits' 8 rows as 8 time steps of 8
  features, a Conv1D, then depthwise-separable 1-D blocks (DepthwiseConv1D and 1x1 Conv1D, BatchNorm, ReLU).
  The outliers: two channels of the first BatchNorm x FACTOR, the first depthwise kernel's matching channels
  / FACTOR (ReLU is positively homogeneous)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FACTOR = 100.0
CHANNELS = 2
EPOCHS = 30


def mobilenet_style() -> Any:
    import keras
    from keras import layers as L

    def bn_relu6(x: Any, name: str) -> Any:
        return L.ReLU(6.0, name=f"{name}_relu6")(L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x))

    inp = keras.Input((8, 8, 1))
    x = bn_relu6(L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp), "stem")
    x = bn_relu6(L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw1")(x), "dw1")
    x = bn_relu6(L.Conv2D(32, 1, use_bias=False, name="pw1")(x), "pw1")
    x = bn_relu6(L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw2")(x), "dw2")
    x = L.BatchNormalization(momentum=0.9, name="project_bn")(L.Conv2D(24, 1, use_bias=False, name="project")(x))
    x = bn_relu6(L.Conv2D(48, 1, use_bias=False, name="expand")(x), "expand")
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="logits")(x))


def ds_cnn_style() -> Any:
    import keras
    from keras import layers as L

    def bn_relu(x: Any, name: str) -> Any:
        return L.ReLU(name=f"{name}_relu")(L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x))

    inp = keras.Input((8, 8))
    x = bn_relu(L.Conv1D(32, 3, padding="same", use_bias=False, name="conv")(inp), "conv")
    for i in (1, 2):
        x = bn_relu(L.DepthwiseConv1D(3, padding="same", use_bias=False, name=f"dw{i}")(x), f"dw{i}")
        x = bn_relu(L.Conv1D(32, 1, use_bias=False, name=f"pw{i}")(x), f"pw{i}")
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax", name="logits")(x))


MODELS = {"mobilenet": (mobilenet_style, ("project_bn", "expand")), "ds_cnn": (ds_cnn_style, ("conv_bn", "dw1"))}


def digits(npz: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test in the model's input shape (scaled by 1/16)."""
    with np.load(npz) as d:
        x_tr, x_te = d["x_train"] / 16.0, d["x_test"] / 16.0
        y_tr, y_te = d["y_train"], d["y_test"]
    if name == "mobilenet":
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    return x_tr.astype(np.float32), y_tr, x_te.astype(np.float32), y_te


def _add_outliers(model: Any, norm: str, reader: str, x: np.ndarray) -> None:
    """The CHANNELS widest channels of `norm`'s output x FACTOR (gamma and beta), `reader`'s input / FACTOR."""
    import keras

    bn, nxt = model.get_layer(norm), model.get_layer(reader)
    out = keras.Model(model.input, bn.output).predict(x, verbose=0)
    channels = np.argsort(-np.abs(out).reshape(-1, out.shape[-1]).max(axis=0))[:CHANNELS]
    gamma, beta, mean, var = bn.get_weights()
    gamma[channels] *= FACTOR
    beta[channels] *= FACTOR
    bn.set_weights([gamma, beta, mean, var])
    kernel = nxt.get_weights()[0]  # (k..., in, out) or, depthwise, (k..., C, 1): input channel on axis -2
    kernel[..., channels, :] /= FACTOR
    nxt.set_weights([kernel, *nxt.get_weights()[1:]])


def train_with_outliers(name: str, npz: Path, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """The model trained EPOCHS epochs (seed `seed`), its outliers added (float predictions unchanged to 1e-4),
    saved as folder/model.keras and folder/saved_model."""
    import keras

    build, (norm, reader) = MODELS[name]
    keras.utils.set_random_seed(seed)
    x, y, x_te, _ = digits(npz, name)
    model = build()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0)
    before = model.predict(x_te, verbose=0)
    _add_outliers(model, norm, reader, x[:256])
    after = model.predict(x_te, verbose=0)
    assert np.abs(after - before).max() < 1e-4 and np.array_equal(after.argmax(1), before.argmax(1))
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    model.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    return folder / "model.keras", folder / "saved_model"

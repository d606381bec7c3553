"""A model whose float function is intact but whose activations carry outlier channels: two post-BN channels
scaled by FACTOR and the next conv's matching input weights by 1/FACTOR (ReLU is positively homogeneous). Plain
min-max int8 misses by several points on it; SmoothQuant-style migration and cross-layer equalization (both in
pipeline/quantize) bring it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FACTOR = 500.0
CHANNELS = 2


def scale_through(bn: Any, tail: Any, channels: np.ndarray, factor: float = FACTOR) -> None:
    """BatchNorm channels `channels` x factor, and the tail's input weights on them / factor: the same function
    through a ReLU. The tail is a Conv2D (kernel HWIO) or a DepthwiseConv2D (HWCM): channels on axis 2 in both."""
    gamma, beta, mean, var = bn.get_weights()
    gamma[channels] *= factor
    beta[channels] *= factor
    bn.set_weights([gamma, beta, mean, var])
    kernel, bias = tail.get_weights()
    kernel[:, :, channels, :] /= factor
    tail.set_weights([kernel, bias])


def make_outlier_model(trained: Path, npz: Path, dest: Path) -> float:
    """The outlier twin of `trained` saved at `dest`; returns the largest output difference from `trained`."""
    import keras

    model = keras.saving.load_model(trained)
    with np.load(npz) as d:
        x = (d["x_test"][..., None] / 16.0).astype(np.float32)
    before = model.predict(x, verbose=0)
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    conv2 = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][1]
    relu_out = keras.Model(model.input, model.layers[model.layers.index(bn) + 1].output).predict(x, verbose=0)
    channels = np.argsort(-relu_out.max(axis=(0, 1, 2)))[:CHANNELS]  # the widest-ranging channels
    scale_through(bn, conv2, channels)
    after = model.predict(x, verbose=0)
    assert np.array_equal(before.argmax(1), after.argmax(1))
    model.save(dest)
    return float(np.abs(after - before).max())

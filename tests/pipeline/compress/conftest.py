"""Tiny model builders shared by the stage tests (exposed as fixtures: no test-package imports needed)."""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pipeline.compress.base import TrainData  # noqa: E402
from pipeline.compress.channels import analyze_channels, keep_count  # noqa: E402
from pipeline.compress.layer_kinds import RNN_GATES  # noqa: E402

L = keras.layers


def _randomize_bn(model: keras.Model, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c).astype("float32"),
                    rng.normal(0, 0.2, c).astype("float32"),
                    rng.normal(0, 0.2, c).astype("float32"),
                    rng.uniform(0.5, 2.0, c).astype("float32"),
                ]
            )


def build_residual(
    num_classes: int = 5, seed: int = 0, channels: int = 3, bn_momentum: float = 0.99
) -> keras.Model:
    """Conv/BN stem, residual block with a depthwise branch, concatenation, Flatten -> Dense, softmax.

    A low `bn_momentum` lets BatchNorm statistics settle within the few steps of a tiny training run.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, channels), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = L.ReLU()(x)
    b = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    b = L.BatchNormalization(momentum=bn_momentum, name="dw_bn")(b)
    b = L.ReLU()(b)
    b = L.Conv2D(8, 1, name="pw")(b)
    b = L.BatchNormalization(momentum=bn_momentum, name="pw_bn")(b)
    x = L.Add()([x, b])
    x = L.ReLU()(x)
    c1 = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(x)
    c2 = L.Conv2D(4, 1, name="c2")(x)
    x = L.Concatenate()([c1, c2])
    x = L.BatchNormalization(momentum=bn_momentum, name="cat_bn")(x)
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(10, activation="relu", name="fc")(x)
    out = L.Dense(num_classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inp, out, name="residual")
    _randomize_bn(model)
    return model


def build_sequential(num_classes: int = 4, seed: int = 0) -> keras.Model:
    """A Sequential CNN with a separable conv and global pooling, emitting logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(8, 3, padding="same", activation="relu", name="conv_a"),
            L.MaxPooling2D(2),
            L.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep"),
            L.Conv2D(12, 3, padding="same", activation="relu", name="conv_b"),
            L.GlobalAveragePooling2D(),
            L.Dense(16, activation="relu", name="fc"),
            L.Dense(num_classes, name="logits"),
        ],
        name="seq",
    )


def build_rnn(num_classes: int = 3, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 4))
    x = L.LSTM(8, return_sequences=True, name="lstm")(inp)
    x = L.GRU(6, name="gru")(x)
    out = L.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inp, out, name="rnn")


def build_se(seed: int = 0) -> keras.Model:
    """Conv1D with a squeeze-and-excitation gate (GAP -> Dense -> Dense -> Reshape -> Multiply), logits."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 5))
    x = L.Conv1D(12, 3, padding="same", activation="relu", name="conv")(inp)
    s = L.GlobalAveragePooling1D()(x)
    s = L.Dense(4, activation="relu", name="squeeze")(s)
    s = L.Dense(12, activation="sigmoid", name="excite")(s)
    s = L.Reshape((1, 12))(s)
    x = L.Multiply()([x, s])
    x = L.Conv1D(8, 3, activation="relu", name="conv2")(x)
    x = L.GlobalMaxPooling1D()(x)
    return keras.Model(inp, L.Dense(3, name="logits")(x), name="se")


def build_text(seed: int = 0) -> keras.Model:
    """Embedding -> LSTM -> softmax over int token ids."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((7,), dtype="int32")
    x = L.Embedding(20, 8, name="embed")(inp)
    x = L.LSTM(10, name="lstm")(x)
    x = L.Dropout(0.1)(x)
    return keras.Model(inp, L.Dense(2, activation="softmax", name="classifier")(x), name="text")


def zero_weakest_channels(model: keras.Model, sparsity: float, seed: int = 0) -> dict[str, int]:
    """Zero, in each prunable channel group, as many channels as pruning at `sparsity` removes.

    Producer filters (kernel columns and bias) are zeroed, and for every per-channel layer on the group
    BatchNorm gamma = beta = 0 and depthwise bias = 0, so those channels are exactly 0 everywhere: removing
    them must not change the outputs. Returns the number zeroed per group's first producer.
    """
    rng = np.random.default_rng(seed)
    graph = analyze_channels(model, mode="prune")
    zeroed = {}
    for group in graph.prunable():
        n_drop = group.size - keep_count(group.size, sparsity)
        if n_drop == 0:
            continue
        idx = rng.choice(group.size, n_drop, replace=False)
        zeroed[group.producers[0]] = n_drop
        for name in group.producers:
            layer = model.get_layer(name)
            new = []
            for v, w in zip(layer.weights, layer.get_weights(), strict=True):
                w = w.copy()
                if type(layer) in RNN_GATES:
                    units = w.shape[-1] // RNN_GATES[type(layer)]
                    cols = np.concatenate([idx + k * units for k in range(RNN_GATES[type(layer)])])
                    w[..., cols] = 0.0
                elif v.name == "depthwise_kernel":
                    pass
                else:
                    w[..., idx] = 0.0
                new.append(w)
            layer.set_weights(new)
        for name in group.passthrough:
            layer = model.get_layer(name)
            # The group's channels sit at an offset when the layer follows a concatenation.
            offset, positions = 0, []
            for gid in graph.input_layouts[name].groups:
                if graph.find(gid) == group.id:
                    positions.append(offset + idx)
                offset += graph.group(gid).size
            where = np.concatenate(positions)
            new = []
            for v, w in zip(layer.weights, layer.get_weights(), strict=True):
                w = w.copy()
                if v.name in ("gamma", "beta", "bias"):
                    w[..., where] = 0.0
                new.append(w)
            layer.set_weights(new)
    return zeroed


def digits_data(n_train: int = 400, n_test: int = 200) -> TrainData:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x.reshape(-1, 8, 8, 1) / 16.0).astype("float32")
    y = y.astype("int64")
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    tr, te = perm[:n_train], perm[n_train : n_train + n_test]
    return TrainData(x[tr], y[tr], x[te], y[te], num_classes=10)


@pytest.fixture
def residual_model() -> Callable[..., keras.Model]:
    return build_residual


@pytest.fixture
def sequential_model() -> Callable[..., keras.Model]:
    return build_sequential


@pytest.fixture
def rnn_model() -> Callable[..., keras.Model]:
    return build_rnn


@pytest.fixture
def se_model() -> Callable[..., keras.Model]:
    return build_se


@pytest.fixture
def text_model() -> Callable[..., keras.Model]:
    return build_text


@pytest.fixture
def zero_channels() -> Callable[..., dict[str, int]]:
    return zero_weakest_channels


@pytest.fixture(scope="session")
def digits() -> TrainData:
    return digits_data()

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from pipeline.compress.cost import count_macs, count_params, float_size_bytes  # noqa: E402

L = keras.layers


def test_count_macs_conv_dense_by_hand() -> None:
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3)(inp)  # valid: 6x6x4 outputs, 3*3*3 MACs each
    x = L.BatchNormalization()(x)
    x = L.Flatten()(x)  # 144
    x = L.Dense(10, activation="relu")(x)
    out = L.Dense(3, activation="softmax")(x)
    model = keras.Model(inp, out)
    expected = 6 * 6 * 4 * (3 * 3 * 3) + 144 * 10 + 10 * 3
    assert count_macs(model) == expected == 5358


def test_count_macs_depthwise_separable_strided() -> None:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.DepthwiseConv2D(3, padding="same"),  # 8*8 positions * 3 channels * 9
            L.SeparableConv2D(5, 3, strides=2, padding="same"),  # 4*4 * (3*9 + 3*5)
            L.GlobalAveragePooling2D(),
            L.Dense(2),
        ]
    )
    assert count_macs(model) == 8 * 8 * 3 * 9 + 4 * 4 * (3 * 9 + 3 * 5) + 5 * 2


def test_count_macs_rnn_and_dense_on_sequences() -> None:
    inp = keras.Input((5, 4))
    x = L.Dense(7)(inp)  # applied at each of 5 steps
    x = L.LSTM(6, return_sequences=True)(x)  # per step 4 gates * 6 units * (7 + 6)
    x = L.GRU(3)(x)  # per step 3 gates * 3 units * (6 + 3)
    model = keras.Model(inp, L.Dense(2)(x))
    assert count_macs(model) == 5 * 4 * 7 + 5 * 4 * 6 * 13 + 5 * 3 * 3 * 9 + 3 * 2


def test_nested_model_counts_inner_layers() -> None:
    inner = keras.Sequential([keras.Input((4,)), L.Dense(6)])
    inp = keras.Input((4,))
    model = keras.Model(inp, L.Dense(2)(inner(inp)))
    assert count_macs(model) == 4 * 6 + 6 * 2


def test_params_and_float_size() -> None:
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.BatchNormalization()])
    assert count_params(model) == 4 * 3 + 3 + 4 * 3
    assert float_size_bytes(model) == 4 * count_params(model)

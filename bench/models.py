"""The benchmarked architectures, built in code with seeded random weights (latency does not need trained ones).

- MobileNetV2 1.0 @ 224x224 and 0.35 @ 96x96: keras.applications.MobileNetV2(weights=None), 1000 classes.
- ResNet-8: the MLPerf Tiny image-classification reference (CIFAR-10, 32x32x3; three residual stacks of
  16/32/64 filters, average pool, Dense(10)).
- DS-CNN: the MLPerf Tiny keyword-spotting reference (49x10x1 MFCC; Conv 10x4/2 with 64 filters, four
  depthwise-separable blocks of 64, average pool, Dense(12)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class BenchModel:
    key: str
    title: str
    input_shape: tuple[int, ...]  # one sample, no batch dimension
    build: Callable[[], keras.Model]
    quick: bool  # part of `--quick`
    headline: bool = False  # the model the speed-up goals are about


def mobilenet_v2(alpha: float, size: int) -> keras.Model:
    import keras

    return keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None)


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int | tuple[int, int], strides: int = 1,
             relu: bool = True) -> keras.KerasTensor:
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", kernel_initializer="he_normal")(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x


def resnet8() -> keras.Model:
    import keras
    from keras import layers

    inp = keras.Input((32, 32, 3), name="image")
    x = _conv_bn(inp, 16, 3)
    for filters, strides in ((16, 1), (32, 2), (64, 2)):
        y = _conv_bn(x, filters, 3, strides)
        y = _conv_bn(y, filters, 3, relu=False)
        if strides != 1:
            x = layers.Conv2D(filters, 1, strides=strides, padding="same", kernel_initializer="he_normal")(x)
        x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.AveragePooling2D(pool_size=8)(x)
    out = layers.Dense(10, activation="softmax")(layers.Flatten()(x))
    return keras.Model(inp, out, name="resnet8")


def ds_cnn() -> keras.Model:
    import keras
    from keras import layers

    inp = keras.Input((49, 10, 1), name="mfcc")
    x = _conv_bn(inp, 64, (10, 4), strides=2)
    x = layers.Dropout(0.2)(x)
    for _ in range(4):
        x = layers.DepthwiseConv2D(3, padding="same")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = _conv_bn(x, 64, 1)
    x = layers.Dropout(0.4)(x)
    x = layers.AveragePooling2D(pool_size=(24, 5))(x)
    out = layers.Dense(12, activation="softmax")(layers.Flatten()(x))
    return keras.Model(inp, out, name="ds_cnn")


MODELS: tuple[BenchModel, ...] = (
    BenchModel("mobilenetv2-1.0-224", "MobileNetV2 1.0 @224", (224, 224, 3), lambda: mobilenet_v2(1.0, 224),
               quick=False, headline=True),
    BenchModel("mobilenetv2-0.35-96", "MobileNetV2 0.35 @96", (96, 96, 3), lambda: mobilenet_v2(0.35, 96),
               quick=True),
    BenchModel("resnet8", "ResNet-8 (CIFAR, 32x32x3)", (32, 32, 3), resnet8, quick=False),
    BenchModel("ds-cnn", "DS-CNN KWS (49x10x1)", (49, 10, 1), ds_cnn, quick=True),
)


def selected(quick: bool) -> list[BenchModel]:
    return [m for m in MODELS if m.quick or not quick]

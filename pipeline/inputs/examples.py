"""Built-in examples: data that ships inside a package, a teacher trained here, seeded and deterministic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import UsageError
from pipeline.inputs import example_twohead
from pipeline.inputs.data import Preprocess, RawData
from targets import target_names

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Example:
    name: str
    description: str
    version: str  # bump when the data, teacher or training changes (cache key)
    config: dict[str, Any]
    preprocess: Preprocess
    load: Callable[[], RawData]
    build_teacher: Callable[[], keras.Model]
    epochs: int
    reconstructs: bool = False  # the teacher learns to reproduce its input (an autoencoder), not labels
    # Several outputs: trains the teacher (model, preprocessed x_train, y_train by output name, epochs, seed,
    # callbacks) with a loss per output; None: pipeline.inputs.teacher.train_teacher on the one output.
    train: Callable[[keras.Model, Any, Any, int, int, list[Any]], None] | None = None


def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x, y = d.images.astype(np.float32), d.target.astype(np.int64)
    return tuple(train_test_split(x, y, test_size=0.2, stratify=y, random_state=0))  # type: ignore[return-value]


def _digits_images() -> RawData:
    x_tr, x_te, y_tr, y_te = _digits_split()
    return RawData(x_tr[..., None], y_tr, x_te[..., None], y_te, source="example:digits-images")


def _digits_cnn() -> keras.Model:
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(64, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(128, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(64, activation="relu")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="digits_cnn")


def _digits_rows() -> RawData:
    x_tr, x_te, y_tr, y_te = _digits_split()
    return RawData(x_tr, y_tr, x_te, y_te, source="example:digits-rows")


def _digits_lstm() -> keras.Model:
    import keras
    from keras import layers

    inp = keras.Input((8, 8), name="rows")  # each 8x8 digit as 8 time steps of 8 features
    x = layers.LSTM(64)(inp)
    x = layers.Dense(64, activation="relu")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="digits_lstm")


ANOMALY_DIGIT = 7  # never seen in training: the anomalies of digits-anomaly


def _digits_anomaly() -> RawData:
    """Digits as 64 features; train on every digit but one, test on all: the held-out digit is the anomaly. The
    validation split (choices are judged on it, so it needs anomalies too): a seeded fifth of the training
    split's normal digits and all of its held-out digit, none of which is trained on."""
    x_tr, x_te, y_tr, y_te = _digits_split()
    x_tr = x_tr.reshape(-1, 64)
    normal = np.flatnonzero(y_tr != ANOMALY_DIGIT)
    held = np.random.default_rng(0).permutation(normal)[: len(normal) // 5]
    train = np.setdiff1d(normal, held)
    val = np.sort(np.concatenate([held, np.flatnonzero(y_tr == ANOMALY_DIGIT)]))
    labels = (y_te == ANOMALY_DIGIT).astype(np.int64)
    return RawData(x_tr[train], np.zeros(len(train), np.int64), x_te.reshape(-1, 64), labels,
                   source="example:digits-anomaly", x_val=x_tr[val],
                   y_val=(y_tr[val] == ANOMALY_DIGIT).astype(np.int64))


def _digits_autoencoder() -> keras.Model:
    """MLPerf Tiny's anomaly-detection shape, scaled to 64 features: Dense/BatchNorm/ReLU down to 8 and back."""
    import keras
    from keras import layers

    inp = keras.Input((64,), name="features")
    x = inp
    for units in (32, 16, 8, 16, 32):
        x = layers.Dense(units)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
    out = layers.Dense(64, name="reconstruction")(x)
    return keras.Model(inp, out, name="digits_autoencoder")


_ALL_TARGETS: dict[str, dict[str, Any]] = {name: {} for name in target_names()}

EXAMPLES: dict[str, Example] = {
    "digits-cnn": Example(
        name="digits-cnn",
        description="CNN on scikit-learn's 8x8 handwritten digits; distill -> channel prune -> int8",
        version="1",
        config={
            "model": {"example": "digits-cnn"},
            "distill": {"student": "width:0.5", "temperature": 4.0, "alpha": 0.7, "epochs": 30},
            "prune": {"method": "channel", "sparsity": 0.5, "epochs": 25},
            "quantize": {"calibration_samples": 300, "calibration": "minmax"},
            "budget": {"max_accuracy_drop": 0.01},
            "targets": _ALL_TARGETS,
        },
        preprocess=Preprocess(scale=16.0),
        load=_digits_images,
        build_teacher=_digits_cnn,
        epochs=30,
    ),
    "digits-lstm": Example(
        name="digits-lstm",
        description="LSTM reading each 8x8 digit as 8 time steps of 8 features; distill -> int8",
        version="1",
        config={
            "model": {"example": "digits-lstm"},
            "distill": {"student": "width:0.5", "temperature": 4.0, "alpha": 0.7, "epochs": 80,
                        "learning_rate": 5e-3, "patience": 10},
            "quantize": {"calibration_samples": 300, "calibration": "minmax"},
            "budget": {"max_accuracy_drop": 0.01},
            "targets": _ALL_TARGETS,
        },
        preprocess=Preprocess(scale=16.0),
        load=_digits_rows,
        build_teacher=_digits_lstm,
        epochs=40,
    ),
    "digits-anomaly": Example(
        name="digits-anomaly",
        description=f"autoencoder on 64 digit features, the digit {ANOMALY_DIGIT} held out as the anomaly; "
                    "judged by reconstruction_auc -> int8",
        version="1",
        config={
            "model": {"example": "digits-anomaly"},
            "quantize": {"calibration_samples": 300, "calibration": "minmax", "sampling": "random"},
            "metric": {"name": "reconstruction_auc"},
            "budget": {"max_metric_drop": 0.01},
            # OpenVINO 2026.4.1's CPU plugin computes this int8 model wrongly with one inference thread on an
            # AVX-512 VNNI AMD EPYC (outputs ~1e9, AUC 0.53; right with 2 threads, and on an emulated AVX2-only
            # CPU with one): measured here, so the example verifies OpenVINO with two threads.
            "targets": {"tflite": {}, "openvino": {"threads": 2}, "tensorrt": {}},
        },
        preprocess=Preprocess(scale=16.0),
        load=_digits_anomaly,
        build_teacher=_digits_autoencoder,
        epochs=60,
        reconstructs=True,
    ),
    "digits-twohead": Example(
        name="digits-twohead",
        description="two inputs (image, halves) and two outputs (digit: accuracy, ink: regression); every output "
                    "checked in every runtime -> int8",
        version="1",
        config={
            "model": {"example": "digits-twohead"},
            "quantize": {"calibration_samples": 300, "calibration": "minmax"},
            "metric": {"name": "accuracy", "output": "digit"},
            "budget": {"max_accuracy_drop": 0.01},
            # dense layers: OpenVINO verified with two threads (docs/how-it-works/guarantees.md: one-thread int8 FC on AVX-512 VNNI)
            "targets": {"tflite": {}, "openvino": {"threads": 2}, "tensorrt": {}},
        },
        preprocess=Preprocess(scale=16.0),
        load=example_twohead.load,
        build_teacher=example_twohead.build,
        epochs=30,
        train=example_twohead.train,
    ),
}


def get_example(name: str) -> Example:
    if name not in EXAMPLES:
        raise UsageError(f"unknown example '{name}' (built-in examples: {', '.join(EXAMPLES)})")
    return EXAMPLES[name]

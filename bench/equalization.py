"""The two Keras equalization methods measured: SmoothQuant-style activation-to-weight migration
(pipeline/quantize/smoothquant.py, Xiao et al. 2023, alpha 0.5) and cross-layer equalization
(pipeline/quantize/cle.py, Nagel et al. 2019, with high-bias absorption), against no equalization.

Each model is trained here on scikit-learn's 8x8 digits, equalized by each method (the float function kept,
to 1e-4 on the test split), exported with min-max calibration by each target as edgepipe ships it (LiteRT,
OpenVINO, ONNX Q/DQ for TensorRT: every weight per output channel) and by LiteRT with per-tensor weights
(the converter's own `disable_per_channel`, the grid of integer-only accelerators that take one scale per
tensor, and the case CLE was designed for), and evaluated on the test split (360 images) by edgepipe's runner
in each runtime.

Models:
- outlier-channels: the tests' CNN (conv 16 -> BN -> ReLU -> conv 24 ReLU -> average pool -> dense), its two
  widest post-BN channels x500 and the next conv's matching input weights / 500 (tests/outliers.py): the
  float function is intact, the per-tensor activation range 500x wider.
- mobilenet-style: depthwise-separable blocks with BatchNorm (ReLU between the pairs CLE can take, as Nagel
  et al. do; ReLU6 stops both methods), as trained.
- mobilenet-style, weight-range imbalance: the same model with the two first-depthwise channels that range
  least (after their BatchNorm and ReLU) x IMBALANCE through that BatchNorm (gamma and beta) and the next 1x1
  conv's matching input weights / IMBALANCE: the depthwise layer's BatchNorm-folded weights then span
  IMBALANCE x more in those channels (what one weight scale per tensor feels), while those channels'
  activations stay within the tensor's range; the float function is intact.

    python -m bench.equalization [--out BENCHMARKS-equalization.md] [--epochs 25]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .system import emit, host_words

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("none", "smoothquant", "cle")
COLUMNS = ("tflite", "tflite per-tensor", "openvino", "tensorrt")
OUTLIER_FACTOR = 500.0
IMBALANCE = 30.0
MODELS = ("outlier-channels", "mobilenet-style", "mobilenet-style, weight-range imbalance")


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from pipeline.inputs.examples import _digits_split

    x_tr, x_te, y_tr, y_te = _digits_split()
    return (x_tr[..., None] / 16.0).astype(np.float32), y_tr, (x_te[..., None] / 16.0).astype(np.float32), y_te


def _outlier_cnn() -> Any:
    import keras
    from keras import layers as L

    inp = keras.Input((8, 8, 1))
    x = L.Activation("relu")(L.BatchNormalization(momentum=0.9, name="bn")(L.Conv2D(16, 3, padding="same")(inp)))
    x = L.Conv2D(24, 3, padding="same", activation="relu", name="conv2")(x)
    return keras.Model(inp, L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x)))


def _mobilenet_style() -> Any:
    import keras
    from keras import layers as L

    def bn_relu(x: Any, name: str) -> Any:
        return L.ReLU(name=f"{name}_relu")(L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x))

    inp = keras.Input((8, 8, 1))
    x = bn_relu(L.Conv2D(16, 3, padding="same", use_bias=False)(inp), "stem")
    for i, (filters, stride) in enumerate(((32, 1), (48, 2)), start=1):
        x = bn_relu(L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x), f"dw{i}")
        x = bn_relu(L.Conv2D(filters, 1, use_bias=False, name=f"pw{i}")(x), f"pw{i}")
    return keras.Model(inp, L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x)))


def _with_outliers(model: Any, x: np.ndarray) -> None:
    """The two widest post-BN channels x OUTLIER_FACTOR, conv2's matching input weights / OUTLIER_FACTOR."""
    import keras

    bn, conv2 = model.get_layer("bn"), model.get_layer("conv2")
    relu_out = keras.Model(model.input, model.layers[model.layers.index(bn) + 1].output).predict(x, verbose=0)
    channels = np.argsort(-relu_out.max(axis=(0, 1, 2)))[:2]
    gamma, beta, mean, var = bn.get_weights()
    gamma[channels] *= OUTLIER_FACTOR
    beta[channels] *= OUTLIER_FACTOR
    bn.set_weights([gamma, beta, mean, var])
    kernel, bias = conv2.get_weights()
    kernel[:, :, channels, :] /= OUTLIER_FACTOR
    conv2.set_weights([kernel, bias])


def _imbalanced(model: Any, x: np.ndarray) -> None:
    """The two dw1 channels with the smallest post-ReLU range x IMBALANCE (dw1's BatchNorm gamma and beta),
    pw1's matching input weights / IMBALANCE."""
    import keras

    bn, pw = model.get_layer("dw1_bn"), model.get_layer("pw1")
    act = keras.Model(model.input, model.get_layer("dw1_relu").output).predict(x, verbose=0).max(axis=(0, 1, 2))
    channels = np.argsort(act)[:2]
    gamma, beta, mean, var = bn.get_weights()
    gamma[channels] *= IMBALANCE
    beta[channels] *= IMBALANCE
    bn.set_weights([gamma, beta, mean, var])
    kernel = pw.get_weights()[0]
    kernel[:, :, channels, :] /= IMBALANCE
    pw.set_weights([kernel])


def _trained(name: str, epochs: int, x: np.ndarray, y: np.ndarray) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = _outlier_cnn() if name == "outlier-channels" else _mobilenet_style()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    if name == "outlier-channels":
        _with_outliers(model, x[:256])
    elif name == MODELS[2]:
        _imbalanced(model, x[:256])
    return model


def _variant(model: Any, method: str, calib: np.ndarray) -> tuple[Any, str]:
    """The model equalized by `method`, and what was done in a few words."""
    from pipeline.quantize import cle, smoothquant

    if method == "none":
        return model, "-"
    if method == "smoothquant":
        out, done = smoothquant.migrate(model, calib)
        return out, (f"{len(done)} pairs; activation spread {max(d.spread_before for d in done):.0f} -> "
                     f"{max(d.spread_after for d in done):.1f}")
    out, pairs = cle.equalize(model, calib)
    before = max(max(d.head_spread_before, d.tail_spread_before) for d in pairs)
    after = max(max(d.head_spread_after, d.tail_spread_after) for d in pairs)
    return out, (f"{len(pairs)} pairs; weight spread {before:.1f} -> {after:.1f}; "
                 f"{sum(d.absorbed for d in pairs)} biases absorbed")


def _per_tensor_tflite(model: Any, calib: Any, dest: Path) -> Path:
    """LiteRT int8 with one weight scale per tensor: the converter's calibration, its MLIR quantizer with
    disable_per_channel (what targets/tflite.py runs, that flag aside)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    from targets.tflite import calibrated_model

    content = convert.mlir_quantize(calibrated_model(model, calib, "minmax"), disable_per_channel=True,
                                    input_data_type=tf.int8, output_data_type=tf.int8)
    dest.write_bytes(bytes(content))
    return dest


def _accuracies(keras_model: Any, work: Path, calib: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from targets import ExportOptions, FloatModel, get_target, runner

    work.mkdir(parents=True, exist_ok=True)
    keras_model.save(work / "model.keras")
    keras_model.export(str(work / "saved_model"), format="tf_saved_model", verbose=False)
    fm = FloatModel(work / "saved_model", work / "model.keras", (8, 8, 1))
    out = {"float": float(np.mean(keras_model.predict(x, verbose=0).argmax(1) == y))}
    for target in ("tflite", "openvino", "tensorrt"):
        result = get_target(target).export(fm, calib, work / target, ExportOptions())
        out[target] = runner.evaluate(runner.open_session(work / target / result.artifact), x, y)
    per_tensor = _per_tensor_tflite(fm, calib, work / "model_per_tensor.tflite")
    out["tflite per-tensor"] = runner.evaluate(runner.open_session(per_tensor), x, y)
    return out


def measure(epochs: int) -> list[dict[str, Any]]:
    from calibration import make_calibration_set

    x, y, x_te, y_te = _digits()
    calib = make_calibration_set(x, y, 200)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-bench-eq-") as tmp:
        for name in MODELS:
            model = _trained(name, epochs, x, y)
            reference = model.predict(x_te, verbose=0)
            for method in METHODS:
                variant, what = _variant(model, method, calib.samples)
                diff = float(np.abs(variant.predict(x_te, verbose=0) - reference).max())
                acc = _accuracies(variant, Path(tmp) / f"{MODELS.index(name)}-{method}", calib, x_te, y_te)
                rows.append({"model": name, "method": method, "what": what, "float_diff": diff, **acc})
                print(f"{name} {method}: {acc}", file=sys.stderr)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    names = {"none": "none", "smoothquant": "SmoothQuant-style migration", "cle": "cross-layer equalization"}
    lines = ["| model | equalization | what it did | float | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---:|" + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = [f"{r[c]:.4f} ({r[c] - r['float']:+.4f})" for c in COLUMNS]
        lines.append(f"| {r['model']} | {names[r['method']]} | {r['what']} | {r['float']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the table (markdown) here as well")
    parser.add_argument("--epochs", type=int, default=25)
    args = parser.parse_args(argv)
    started = time.time()
    rows = measure(args.epochs)
    head = (f"# Equalization in Keras: SmoothQuant-style migration vs cross-layer equalization\n\n"
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d} by `python -m bench.equalization` on {host_words()}, "
            f"{time.time() - started:.0f} s. "
            "Top-1 accuracy on the digits test split (360 images) in each runtime, min-max calibration "
            "(200 samples), the drop from the float model in parentheses. Every equalized model keeps the float "
            f"function (largest output difference over the test split: "
            f"{max(r['float_diff'] for r in rows):.1e}).\n\n")
    emit(head + table(rows) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

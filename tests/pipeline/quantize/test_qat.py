"""Quantization-aware fine-tuning: a classifier whose int8 artifact misses a 0.01 budget (one conv channel
scaled x30 with the dense layer scaled back: the float function is unchanged, the per-tensor activation range
is not) comes back within the budget after QAT, measured in LiteRT, OpenVINO and ONNX Runtime (Q/DQ)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration import CalibrationSet
from calibration.calibset import SamplingMethod
from pipeline.cache import Cache
from pipeline.quantize.qat import qat_model_for
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, get_target, runner

FACTOR = 30.0
BUDGET = 0.01
TARGETS = ("tflite", "openvino", "tensorrt")


def _heavy_tailed(x: np.ndarray, y: np.ndarray, folder: Path) -> FloatModel:
    import keras
    from conftest import tiny_cnn

    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    conv2 = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][1]
    dense = model.layers[-1]
    (ck, cb), (dk, db) = conv2.get_weights(), dense.get_weights()
    ck[..., 0] *= FACTOR
    cb[0] *= FACTOR
    dk[0] /= FACTOR
    conv2.set_weights([ck, cb])
    dense.set_weights([dk, db])
    model.save(folder / "model.keras")
    model.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    return FloatModel(folder / "saved_model", folder / "model.keras", (8, 8, 1))


def _int8_accuracy(target: str, model: FloatModel, calib: CalibrationSet, out: Path, x: np.ndarray,
                   y: np.ndarray) -> float:
    result = get_target(target).export(model, calib, out, ExportOptions())
    return runner.evaluate(runner.open_session(out / result.artifact, 1), x, y)


@pytest.mark.slow
def test_qat_recovers_a_model_that_int8_alone_misses(digits_npz: Path, tmp_path: Path) -> None:
    import keras

    with np.load(digits_npz) as d:
        x_tr, y_tr = (d["x_train"][..., None] / 16.0).astype(np.float32), d["y_train"]
        x_te, y_te = (d["x_test"][..., None] / 16.0).astype(np.float32), d["y_test"]
    model = _heavy_tailed(x_tr, y_tr, tmp_path)
    reference = float(np.mean(keras.saving.load_model(model.keras_path).predict(x_te, verbose=0).argmax(1) == y_te))
    calib = CalibrationSet(x_tr[:64], "test", SamplingMethod.RANDOM, 0)
    cache = Cache(tmp_path / "cache")
    before, after = {}, {}
    for t in TARGETS:
        before[t] = _int8_accuracy(t, model, calib, tmp_path / f"{t}-int8", x_te, y_te)
        qat, why = qat_model_for(t, model, "heavy", (x_tr, y_tr, x_te, y_te), calib, cache, UI(quiet=True))
        assert qat is not None, why
        after[t] = _int8_accuracy(t, qat.model, calib, tmp_path / f"{t}-qat", x_te, y_te)
    print(f"float {reference:.4f} int8 {before} after QAT {after}")  # shown with -s
    assert max(reference - a for a in before.values()) > BUDGET, "int8 alone should miss the budget somewhere"
    for t in TARGETS:
        assert reference - after[t] <= BUDGET, f"{t}: {after[t]:.4f} after QAT vs float {reference:.4f}"
    again, _ = qat_model_for("tensorrt", model, "heavy", (x_tr, y_tr, x_te, y_te), calib, cache, UI(quiet=True))
    assert again is not None and again.model.saved_model_dir.parent == qat.model.saved_model_dir.parent  # cached

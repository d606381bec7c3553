"""QAT on the models people ship on edge devices (tests/edge_models.py): a MobileNet-style model (depthwise-
separable blocks with BatchNorm and ReLU6, a linear bottleneck) and a DS-CNN-style 1-D model (Conv1D,
DepthwiseConv1D, BatchNorm, ReLU), each with two outlier activation channels (x100) that leave the float
function intact. Plain int8 misses BUDGET by several points where it is sized to (MISSES); after QAT every
target's artifact is within BUDGET on the test split, measured by the runtime's own Python API
(tests/runtimes.py); and in each QAT artifact every fake-quantized kernel, the depthwise and 1-D ones among
them, is exactly the fine-tuned model's integers and steps, channel by channel, with the BatchNorm after it
folded in where the backend folds it (tests/weight_grids.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import built_once
from edge_models import digits, train_with_outliers
from runtimes import accuracy
from weight_grids import READERS, find, keras_grid

from calibration import CalibrationSet
from calibration.calibset import SamplingMethod
from pipeline.cache import Cache
from pipeline.compress.graph import outbound_layers
from pipeline.quantize.export import ExportRequest
from pipeline.quantize.qat import QatConfig, QatModel, qat_model_for
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, get_target

BUDGET = 0.05
EPOCHS = 5
TARGETS = ("tflite", "openvino", "tensorrt")
# Sized on an AMD EPYC with AVX-512 VNNI (and BF16), each model trained with seeds 0, 1 and 2 (float accuracy
# 0.978-0.992 on the test split, 360 images), QAT for EPOCHS epochs on 80% of the training split, judged on the
# test split. The spread across seeds stands in for the spread across hosts (AVX2 or VNNI integer kernels
# change results by their rounding, a seed by its initialization).
#   plain int8 drop  mobilenet: tflite 0.058-0.069, openvino 0.106-0.186, tensorrt 0.086-0.172
#                    ds_cnn:    tflite 0.019-0.094, openvino 0.000 (NNCF's own placement is not hurt), tensorrt 0.319-0.600
#   after QAT        mobilenet: -0.006..0.017 on every target;  ds_cnn: 0.003..0.028 on every target
# Smallest margins: int8 alone over BUDGET + SEVERAL_POINTS by 0.026 (mobilenet openvino: 9 of 360 samples),
# QAT within BUDGET by 0.022 (ds_cnn tensorrt, seed 1: 8 samples).
MISSES = {("mobilenet", "openvino"), ("ds_cnn", "tensorrt")}  # plain int8 sized to miss there, one per model
SEVERAL_POINTS = 0.03  # where it is sized to miss, plain int8 misses BUDGET by more than this


@pytest.fixture(scope="module")
def edge_models(digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each model trained (once, when a test first asks for it), with its data, calibration set and float (Keras)
    accuracy on the test split."""
    made: dict[str, Any] = {}

    def get(name: str) -> tuple[FloatModel, tuple[np.ndarray, ...], CalibrationSet, float]:
        if name not in made:
            import keras
            from sklearn.model_selection import train_test_split

            def build(folder: Path) -> None:
                train_with_outliers(name, digits_npz, folder)

            # trained once per test run, shared by the pytest-xdist workers that run this model's cases
            folder, _ = built_once(tmp_path_factory, f"qat-edge-{name}", build, name, digits_npz)
            keras_path, saved = folder / "model.keras", folder / "saved_model"
            x, y, x_te, y_te = digits(digits_npz, name)
            reference = float(np.mean(keras.saving.load_model(keras_path).predict(x_te, verbose=0).argmax(1) == y_te))
            x_fit, x_val, y_fit, y_val = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
            calib = CalibrationSet(x[:64], "test", SamplingMethod.RANDOM, 0)
            made[name] = (FloatModel(saved, keras_path, x.shape[1:]), (x_fit, y_fit, x_val, y_val, x_te, y_te), calib,
                          reference)
        return made[name]

    return {"get": get}


def _fold(model: Any, layer: str) -> np.ndarray | None:
    """The per-channel factor of the BatchNorm right after `layer`, which every backend folds into it."""
    import keras

    consumers = outbound_layers(model).get(layer, [])
    if len(consumers) != 1 or not isinstance(consumers[0], keras.layers.BatchNormalization):
        return None
    bn = consumers[0]
    return np.asarray(bn.gamma.numpy()) / np.sqrt(np.asarray(bn.moving_variance.numpy()) + bn.epsilon)


def _assert_on_grid(target: str, qat: QatModel, artifact: Path) -> list[str]:
    """Every fake-quantized kernel is in the artifact as its fine-tuned integers and (BatchNorm-folded) steps."""
    import keras

    assert qat.model.keras_path is not None
    tuned = keras.saving.load_model(qat.model.keras_path, compile=False)
    grids = READERS[target](artifact)
    checked = []
    for rec in qat.fake_quantized:
        for k in rec["kernels"]:
            kernel = np.asarray(getattr(tuned.get_layer(rec["layer"]), k["weight"]).numpy())
            # OpenVINO leaves a 1-D convolution's BatchNorm as a Multiply and Add after it (the Squeeze between)
            unfolded = target == "openvino" and kernel.ndim == 3
            expected = keras_grid(kernel, k["layout"], k["levels"], None if unfolded else _fold(tuned, rec["layer"]))
            assert find(expected, grids) is not None, f"{target}: {rec['layer']} {k['weight']} is off its grid"
            checked.append(rec["class"])
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", ["mobilenet", "ds_cnn"])
def test_qat_brings_edge_models_within_budget(edge_models: dict, name: str, target: str, tmp_path: Path) -> None:
    model, (x_fit, y_fit, x_val, y_val, x_te, y_te), calib, reference = edge_models["get"](name)
    assert model.keras_path is not None
    before = None  # plain int8 is exported and measured where it is asserted on: where sized to miss
    if (name, target) in MISSES:
        plain = get_target(target).export(model, calib, tmp_path / "int8", ExportOptions())
        before = accuracy(tmp_path / "int8" / plain.artifact, x_te, y_te, threads=2)
    req = ExportRequest(target, model, name, calib, Cache(tmp_path / "cache"), UI(quiet=True))
    qat, why = qat_model_for(req, (x_fit, y_fit, x_val, y_val), QatConfig(epochs=EPOCHS))
    assert qat is not None, why
    result = get_target(target).export(qat.model, calib, tmp_path / "qat", ExportOptions(activation_ranges=qat.ranges))
    after = accuracy(tmp_path / "qat" / result.artifact, x_te, y_te, threads=2)
    print(f"{name} {target}: float {reference:.4f} int8 {before} after QAT {after:.4f}")  # shown with -s
    if before is not None:
        assert reference - before > BUDGET + SEVERAL_POINTS, f"{name} {target}: int8 alone {before:.4f}"
    assert reference - after <= BUDGET, f"{name} {target}: {after:.4f} after QAT vs float {reference:.4f}"
    checked = _assert_on_grid(target, qat, tmp_path / "qat" / result.artifact)
    expected = {"mobilenet": {"Conv2D", "DepthwiseConv2D", "Dense"},
                "ds_cnn": {"Conv1D", "DepthwiseConv1D", "Dense"}}[name]
    assert set(checked) == expected
    assert {r["class"] for r in qat.not_fake_quantized} == {"BatchNormalization"}

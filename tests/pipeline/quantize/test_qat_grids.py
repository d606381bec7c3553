"""Every artifact carries the grid QAT trained, for every layer kind QAT covers: a model with Conv2D,
DepthwiseConv2D (depth multiplier 2), SeparableConv2D, Conv2DTranspose, Conv1D, TimeDistributed(Dense), Conv3D,
an LSTM (unrolled by the export) and Dense is fine-tuned for each target, exported with its learned ranges, and
read back with each runtime's own API (tests/weight_grids.py): every fake-quantized kernel is in the artifact as
exactly its integers w / step with the same steps, channel by channel (255 levels; OpenVINO's 7-bit 127 levels
except depthwise, which NNCF leaves at 8 bits), and every inner learned activation range is a tensor's
(LiteRT: scale and zero point; OpenVINO: the FakeQuantize limits, zero point on the grid; ONNX: the symmetric
scale). The report lists every weighted layer, fake-quantized or not with the reason (LiteRT's Conv3D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from weight_grids import (
    READERS,
    find,
    keras_grid,
    onnx_activation_scales,
    openvino_activation_limits,
    tflite_activations,
)

from calibration import CalibrationSet
from calibration.calibset import SamplingMethod
from calibration.learned import LearnedRange
from pipeline.cache import Cache
from pipeline.quantize.export import ExportRequest
from pipeline.quantize.qat import QatConfig, QatModel, qat_model_for
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, get_target

TARGETS = ("tflite", "openvino", "tensorrt")
KINDS = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Conv1D", "TimeDistributed", "Conv3D",
         "LSTM", "Dense"}


def _every_kind():
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu")(x)
    x = L.SeparableConv2D(8, 3, padding="same", activation="relu")(x)
    x = L.Conv2DTranspose(8, 3, padding="same")(x)
    x = L.ReLU(6.0)(x)
    x = L.Reshape((8, 64))(x)
    x = L.Conv1D(12, 3, padding="same", activation="relu")(x)
    x = L.TimeDistributed(L.Dense(10, activation="relu"))(x)
    cube = L.Flatten()(L.Conv3D(4, 2, padding="same", activation="relu")(L.Reshape((2, 2, 2, 10))(x)))
    seq = L.LSTM(8, unroll=True)(x)  # Add, not Concatenate: LiteRT gives a concatenation's inputs its own scale
    logits = L.Add()([L.Dense(10)(cube), L.Dense(10)(seq)])
    return keras.Model(inp, L.Activation("softmax")(logits))


@pytest.fixture(scope="module")
def every_kind(digits_npz: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[FloatModel, tuple[np.ndarray, ...], CalibrationSet]:
    with np.load(digits_npz) as d:
        x, y = (d["x_train"][..., None] / 16.0).astype(np.float32), d["y_train"]
    model = _every_kind()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    folder = tmp_path_factory.mktemp("every_kind")
    model.save(folder / "model.keras")
    model.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    calib = CalibrationSet(x[:32], "test", SamplingMethod.RANDOM, 0)
    return FloatModel(folder / "saved_model", folder / "model.keras", (8, 8, 1)), (x[:512], y[:512], x[-256:],
                                                                                   y[-256:]), calib


def _kernel(model, layer: str, weight: str) -> np.ndarray:
    obj = model.get_layer(layer)
    for part in weight.split("."):
        obj = getattr(obj, part)
    return np.asarray(obj.numpy())


def _uses(target: str, artifact: Path, r: LearnedRange) -> bool:
    if target == "tflite":
        step = r.scale()
        zero = -128 + round(-r.lo / step)
        return any(np.isclose(s, step, rtol=1e-5) and z == zero for s, z in tflite_activations(artifact))
    if target == "openvino":
        return any(np.isclose(lo, r.lo, rtol=1e-5, atol=1e-7) and np.isclose(hi, r.hi, rtol=1e-5) and levels == 256
                   for lo, hi, levels in openvino_activation_limits(artifact))
    return any(np.isclose(s, r.scale(), rtol=1e-5) for s in onnx_activation_scales(artifact))


def _assert_listed(target: str, qat: QatModel, source) -> None:
    """Every weighted layer is listed once: fake-quantized (every kind here), or not with the reason."""
    done = {r["layer"]: r for r in qat.fake_quantized}
    left = {r["layer"]: r for r in qat.not_fake_quantized}
    assert set(done) | set(left) == {la.name for la in source.layers if la.weights} and not set(done) & set(left)
    assert {r["class"] for r in done.values()} == KINDS - ({"Conv3D"} if target == "tflite" else set())
    if target == "tflite":
        [conv3d] = [r for r in left.values() if r["class"] == "Conv3D"]
        assert "CONV_3D" in conv3d["reason"]
    assert not [r for r in left.values() if r["class"] != "Conv3D"], left
    lstm = next(r for r in done.values() if r["class"] == "LSTM")
    assert [k["weight"] for k in lstm["kernels"]] == ["cell.kernel", "cell.recurrent_kernel"] and "unrolled" in lstm["note"]


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_every_layer_kind_carries_the_trained_grid(every_kind: tuple, target: str, tmp_path: Path) -> None:
    import keras

    model, data, calib = every_kind
    req = ExportRequest(target, model, "every-kind", calib, Cache(tmp_path / "cache"), UI(quiet=True))
    qat, why = qat_model_for(req, data, QatConfig(epochs=1))
    assert qat is not None and qat.model.keras_path is not None, why
    _assert_listed(target, qat, keras.saving.load_model(model.keras_path, compile=False))
    result = get_target(target).export(qat.model, calib, tmp_path / target, ExportOptions(activation_ranges=qat.ranges))
    artifact = tmp_path / target / result.artifact
    grids = READERS[target](artifact)
    tuned = keras.saving.load_model(qat.model.keras_path, compile=False)
    checked = []
    for rec in qat.fake_quantized:
        for k in rec["kernels"]:
            expected = keras_grid(_kernel(tuned, rec["layer"], k["weight"]), k["layout"], k["levels"])
            assert np.abs(expected.ints).max() == (k["levels"] - 1) // 2
            assert find(expected, grids) is not None, f"{target}: {rec['layer']} {k['weight']} not on its grid"
            checked.append(k["kind"])
    assert set(checked) >= {"conv", "depthwise", "transposed", "dense", "recurrent"}
    assert ("conv3d" in checked) == (target != "tflite")
    logits = tuned.layers[-2].name  # the Add before the softmax
    inner = [r for r in qat.ranges if r.layer != logits]  # NNCF puts no FakeQuantize on the logits
    if target == "tflite":  # LiteRT keeps Conv3D in float; the float output's QUANTIZE has a range of its own
        inner = [r for r in inner if not r.layer.startswith("conv3d")]
    assert len(inner) >= 6
    missing = [r.layer for r in inner if not _uses(target, artifact, r)]
    assert not missing, f"{target}: learned ranges not in the artifact: {missing}"

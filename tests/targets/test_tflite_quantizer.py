"""Layers kept out of int8 on tflite: 16x8 by scope through LiteRT Quantizer, float where the op has no 16x8
kernel or when asked; read back from the .tflite's own tensor types and measured in LiteRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration import CalibrationSet, SamplingMethod
from targets import ExportOptions, ExportResult, FloatModel, get_target, runner, tflite_quantizer
from targets.base import KeptPrecision

# Integer artifacts of the trained CNN: a sanity bound against broken quantization, not an accuracy budget.
# Sized as test_precisions.INT_SANITY: int8 and 16x8 artifacts drop 0.003-0.049 (the model is retrained each
# session, and TensorFlow's CPU training is not deterministic), a broken one falls to 0.1-0.3.
INT_SANITY = 0.1


@pytest.fixture(scope="module")
def digits(trained_cnn: Path, digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    import keras

    saved = tmp_path_factory.mktemp("lrtq") / "saved_model"
    keras.saving.load_model(trained_cnn).export(str(saved), verbose=False)
    with np.load(digits_npz) as d:
        x_tr, x, y = d["x_train"][..., None] / 16.0, d["x_test"][..., None] / 16.0, d["y_test"]
    calib = CalibrationSet(x_tr[:64].astype(np.float32), "digits", SamplingMethod.RANDOM, 0)
    return FloatModel(saved, trained_cnn, (8, 8, 1)), calib, x.astype(np.float32), y


def _kinds(folder: Path) -> dict[str, str]:
    return tflite_quantizer.op_kinds((folder / "model_float.tflite").read_bytes())


def _export(digits: tuple, out: Path, kept: KeptPrecision, pick: tuple[str, ...] = ("CONV_2D", "FULLY_CONNECTED"),
            ) -> tuple[ExportResult, tuple[str, ...]]:
    model, calib, _, _ = digits
    target = get_target("tflite")
    plain = target.export(model, calib, out / "plain", ExportOptions())
    kinds = _kinds(out / "plain")
    layers = tuple(next(n for n, k in kinds.items() if k == want) for want in pick)
    assert plain.int16_layers == () and plain.float_layers == ()
    return target.export(model, calib, out / "kept", ExportOptions(float_layers=layers, kept_precision=kept)), layers


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    return runner.evaluate(runner.open_session(path).exact(), x, y, "accuracy")


def _read_back(folder: Path, result: ExportResult, digits: tuple) -> tuple[dict[str, str], float, float]:
    """The artifact's op output types, int8 I/O checked, and its accuracy and its float twin's in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    content = (folder / result.artifact).read_bytes()
    interp = Interpreter(model_content=content)
    assert interp.get_input_details()[0]["dtype"] == np.int8 and interp.get_output_details()[0]["dtype"] == np.int8
    _, _, x, y = digits
    return (tflite_quantizer.layer_types(content), _accuracy(folder / result.artifact, x, y),
            _accuracy(folder / "model_float.tflite", x, y))


def test_int16_keeps_the_layers_16x8_the_rest_int8_measured_in_litert(digits: tuple, tmp_path: Path) -> None:
    result, layers = _export(digits, tmp_path, KeptPrecision.INT16)
    assert result.int16_layers == layers and result.float_layers == ()
    assert any("int16 activations x int8 weights" in n for n in result.notes), result.notes
    assert result.versions["litert-quantizer"]
    types, got, reference = _read_back(tmp_path / "kept", result, digits)
    assert {types[n] for n in layers} == {"int16"}
    assert {t for n, t in types.items() if n not in layers} == {"int8"}, types
    print(f"16x8 {layers}: accuracy {got:.4f} (float {reference:.4f})")
    assert got >= reference - INT_SANITY, (got, reference)


def test_cheapest_keeps_fully_connected_16x8_and_conv_float(digits: tuple, tmp_path: Path) -> None:
    result, (conv, fc) = _export(digits, tmp_path, KeptPrecision.CHEAPEST)
    assert result.int16_layers == (fc,) and result.float_layers == (conv,)
    types, got, reference = _read_back(tmp_path / "kept", result, digits)
    assert (types[fc], types[conv]) == ("int16", "float32")
    assert {t for n, t in types.items() if n not in (conv, fc)} == {"int8"}, types
    print(f"16x8 {fc}, float {conv}: accuracy {got:.4f} (float {reference:.4f})")
    assert got >= reference - INT_SANITY, (got, reference)


def test_cheapest_without_a_fast_16x8_op_is_the_converters_float_route(digits: tuple, tmp_path: Path) -> None:
    result, (conv,) = _export(digits, tmp_path, KeptPrecision.CHEAPEST, pick=("CONV_2D",))
    assert result.float_layers == (conv,) and result.int16_layers == ()
    assert "litert-quantizer" not in result.versions
    assert any("denylisted_nodes" in n and "none at 16x8" in n for n in result.notes), result.notes
    types, _, _ = _read_back(tmp_path / "kept", result, digits)
    assert types[conv] == "float32" and "int16" not in types.values()


def test_float_when_asked(digits: tuple, tmp_path: Path) -> None:
    result, layers = _export(digits, tmp_path, KeptPrecision.FLOAT, pick=("CONV_2D",))
    assert result.float_layers == layers and result.int16_layers == ()
    types = tflite_quantizer.layer_types((tmp_path / "kept" / result.artifact).read_bytes())
    assert types[layers[0]] == "float32" and "int16" not in types.values()


def test_op_without_16x8_kernel_stays_float(tmp_path: Path) -> None:
    """HARD_SWISH has int8 but no 16x8 kernel in LiteRT Quantizer's policy: that layer is float, the conv 16x8."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.Activation("hard_swish")(x)
    out = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 1)(x)))
    keras.Model(inp, out).export(str(tmp_path / "sm"), verbose=False)
    float_tflite = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert()
    kinds = tflite_quantizer.op_kinds(float_tflite)
    swish, conv = (next(n for n, k in kinds.items() if k == want) for want in ("HARD_SWISH", "CONV_2D"))
    calib = CalibrationSet(np.random.default_rng(0).random((16, 8, 8, 1), np.float32), "random",
                           SamplingMethod.RANDOM, 0)
    mixed = tflite_quantizer.quantize_mixed(float_tflite, calib, (swish, conv), KeptPrecision.INT16)
    assert mixed.int16_layers == (conv,) and mixed.float_layers == (swish,)
    types = tflite_quantizer.layer_types(mixed.content)
    assert (types[conv], types[swish]) == ("int16", "float32")
    path = tmp_path / "mixed.tflite"
    path.write_bytes(mixed.content)
    session = runner.open_session(path).exact()
    assert np.isfinite(session.run(calib.samples[:1])).all()
    assert tflite_quantizer.split(float_tflite, (swish, conv)) == ((), (swish, conv)), "CHEAPEST: no FC, all float"

"""The OpenVINO IR's int8 weights are 7-bit in every layer (NNCF overflow_fix ENABLE), not only in the first:
on x86 CPUs without VNNI, full-range s8 weights saturate the int16 pair sums of AVX2's VPMADDUBSW
(BENCHMARKS-openvino-overflow.md: 0.894 vs 0.967 on an AVX2-only CPU with NNCF's default FIRST_LAYER)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.calibset import CalibrationSet, SamplingMethod
from targets import ExportOptions, FloatModel
from targets.openvino import OVERFLOW_NOTE, OpenVINOTarget


def test_every_layer_has_7_bit_weights(tmp_path: Path) -> None:
    import keras
    import openvino as ov
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10, activation="softmax")(x)
    keras.Model(inp, out).export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    samples = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)
    calib = CalibrationSet(samples, "test", SamplingMethod.RANDOM, 0)

    result = OpenVINOTarget().export(FloatModel(tmp_path / "sm", None, (8, 8, 1)), calib, tmp_path / "ov",
                                     ExportOptions())

    assert OVERFLOW_NOTE in result.notes
    model = ov.Core().read_model(str(tmp_path / "ov" / result.artifact))
    weights = [op.get_data() for op in model.get_ops()
               if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert len(weights) == 3  # both convs and the dense layer
    for w in weights:
        assert w.min() >= -64 and w.max() <= 63, (w.min(), w.max())

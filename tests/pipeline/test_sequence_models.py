"""Recurrent and 1-D convolutional models, inputs (N, T, F), through every target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_config

from pipeline.cli import main
from pipeline.quantize.unroll import unrolled


def _gru():
    import keras

    inp = keras.Input((8, 8))
    x = keras.layers.GRU(32)(inp)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


def _conv1d():
    import keras

    inp = keras.Input((8, 8))
    x = keras.layers.Conv1D(24, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv1D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


def _train(model, npz: Path, path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    with np.load(npz) as d:
        x, y = d["x_train"] / 16.0, d["y_train"]
    model.compile(keras.optimizers.Adam(5e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    model.save(path)
    return path


def test_unroll_keeps_the_function() -> None:
    model = _gru()
    twin, changed = unrolled(model)
    x = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    assert changed and twin.layers[1].get_config()["unroll"] is True
    assert np.allclose(model.predict(x, verbose=0), twin.predict(x, verbose=0), atol=1e-5)
    assert unrolled(_conv1d())[1] is False


@pytest.mark.slow
@pytest.mark.parametrize("build", [_gru, _conv1d], ids=["gru", "conv1d"])
def test_sequence_model_on_every_target(build, digits_npz: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    model = _train(build(), digits_npz, tmp_path / "m.keras")
    cfg = write_config(tmp_path / "seq.toml", model, digits_npz)
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)
    assert report["reference"]["accuracy"] > 0.85
    with np.load(tmp_path / "run" / "data" / "eval.npz") as d:
        assert d["x"].shape[1:] == (8, 8)
    for name in ("tflite", "openvino", "tensorrt"):
        t = report["targets"][name]
        assert "error" not in t, t.get("error")
        assert t["accuracy_drop"] <= 0.02, f"{name}: {t['accuracy']} vs {report['reference']['accuracy']}"
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tmp_path / "run" / "tflite" / "model_int8.tflite"))
    assert not [t["name"] for t in interp.get_tensor_details() if t["dtype"] == np.float32]

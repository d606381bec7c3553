"""The one mapping of runtime tensor names to the Keras model's input and output names (runner_sessions:
plain_name, output_order, feed_list), on real artifacts of a two-input, two-output model in each runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from targets import runner
from targets.runner_sessions import feed_list, output_order, plain_name


def test_names_map_to_the_keras_names() -> None:
    assert plain_name("serving_default_image:0") == "image" and plain_name("image:0") == "image"
    assert plain_name("feats") == "feats"
    assert output_order(["output_1", "output_0", "output_2"]) == [1, 0, 2]
    assert output_order(["Identity:0", "Identity_1:0"]) == [0, 1]  # Keras' ONNX export: already the model's order
    x = {"image": np.zeros(1), "feats": np.ones(1)}
    assert [a[0] for a in feed_list(x, ["serving_default_feats:0", "serving_default_image:0"])] == [1.0, 0.0]
    with pytest.raises(ValueError, match="no data for the model input"):
        feed_list({"image": np.zeros(1)}, ["image", "feats"])
    with pytest.raises(ValueError, match="2 inputs"):
        feed_list(np.zeros(1), ["image", "feats"])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, np.ndarray], list]:
    """Float artifacts of an untrained two-input, two-output model whose outputs differ in width (3 and 1)."""
    import keras
    import openvino as ov
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    image, feats = keras.Input((4, 4, 1), name="image"), keras.Input((2,), name="feats")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(image), feats])
    model = keras.Model([image, feats], [keras.layers.Dense(3, name="wide")(h), keras.layers.Dense(1, name="one")(h)])
    x = {"image": np.random.default_rng(0).random((5, 4, 4, 1), np.float32),
         "feats": np.random.default_rng(1).random((5, 2), np.float32)}
    work = tmp_path_factory.mktemp("io-names")
    model.export(str(work / "sm"), format="tf_saved_model", verbose=False)
    (work / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(work / "sm")).convert())
    ov.save_model(ov.convert_model(str(work / "sm")), str(work / "m.xml"))
    model.export(str(work / "m.onnx"), format="onnx", verbose=False)
    paths = {k: work / f"m.{k}" for k in ("tflite", "xml", "onnx")}
    return paths, x, [np.asarray(o) for o in model.predict(x, verbose=0)]


@pytest.mark.parametrize("kind", ["tflite", "xml", "onnx"])
def test_every_runtime_feeds_by_name_and_returns_every_output_in_model_order(
        artifacts: tuple[dict[str, Path], dict[str, np.ndarray], list], kind: str) -> None:
    paths, x, expected = artifacts
    session = runner.open_session(paths[kind], 1, exact=True)
    assert sorted(session.input_names) == ["feats", "image"]  # type: ignore[attr-defined]
    got = runner.outputs_all(session, x)
    assert [g.shape for g in got] == [(5, 3), (5, 1)]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e.reshape(5, -1), rtol=2e-2, atol=2e-2)  # OpenVINO may compute in bf16
    assert sorted(runner.input_shapes(paths[kind]).items()) == [("feats", (1, 2)), ("image", (1, 4, 4, 1))]


@pytest.mark.parametrize("kind", ["tflite", "xml", "onnx"])
def test_bench_generates_every_input(artifacts: tuple[dict[str, Path], dict[str, np.ndarray], list],
                                     kind: str) -> None:
    """`edgepipe bench` without an eval set: a zero sample for each input, by name."""
    out = runner.run(artifacts[0][kind], None, runner.Bench(1, 3, 1))
    assert out["accuracy"] is None and out["latency_ms"]["iterations"] == 3

"""Keras models with dict outputs and dict inputs (issue 28): named by their keys in Keras' order, predicted by
name, their npz keys and [metric] output checked as for list outputs; a dict of one key is a plain model; what
cannot be exported under its key's name is one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import MetricName, MetricSection
from pipeline.errors import ModelLoadError
from pipeline.inputs.data import Preprocess, read_npz
from pipeline.inputs.models import ModelFormat, from_keras, load_model, predict
from pipeline.inputs.source import data_and_metric


def test_dict_outputs_are_named_by_their_keys(dict_outputs: tuple[Path, Path]) -> None:
    ref = load_model(dict_outputs[0])
    assert ref.output_names == ("digit", "ink") and ref.output_shapes == ((10,), (1,))
    assert ref.several_outputs and not ref.several_inputs and ref.input_shape == (8, 8, 1)
    x = np.asarray(read_npz(dict_outputs[1]).x_test, np.float32) / 16.0  # (N, 8, 8, 1)
    assert ref.keras_model is not None
    want = ref.keras_model.predict(x, verbose=0)  # a dict
    for k, name in enumerate(ref.output_names):
        np.testing.assert_array_equal(predict(ref, x, output=k), want[name])
    accuracy = MetricSection(name=MetricName.ACCURACY, output="digit")
    data, metric = data_and_metric(read_npz(dict_outputs[1]), Preprocess(16.0), ref, accuracy, "t")
    assert metric.output == "digit" and metric.output_index == 0 and data.y_test.shape == (360,)
    assert float(np.mean(predict(ref, data.x_test).argmax(axis=1) == data.y_test)) > 0.85
    mse = MetricSection(name=MetricName.MSE, output="ink")
    data, metric = data_and_metric(read_npz(dict_outputs[1]), Preprocess(16.0), ref, mse, "t")
    assert metric.output_index == 1 and data.y_test.shape == (360, 1) and data.y_test.dtype == np.float32


def test_dict_inputs_and_outputs_follow_keras_order(dict_inputs: tuple[Path, Path]) -> None:
    """Built as {"image", "feats"} -> {"ink", "digit"}: Keras (and every exported artifact) orders by key."""
    ref = load_model(dict_inputs[0])
    assert ref.input_names == ("feats", "image") and ref.input_shapes == ((2,), (8, 8, 1))
    assert ref.output_names == ("digit", "ink") and ref.output_shapes == ((10,), (1,))
    data, metric = data_and_metric(read_npz(dict_inputs[1]), Preprocess(16.0), ref, None, "t")
    assert metric.output == "digit" and isinstance(data.x_test, dict) and sorted(data.x_test) == ["feats", "image"]
    assert ref.keras_model is not None
    want = ref.keras_model.predict(data.x_test, verbose=0)
    np.testing.assert_array_equal(predict(ref, data.x_test, output=1), want["ink"])
    assert float(np.mean(predict(ref, data.x_test).argmax(axis=1) == data.y_test)) > 0.85


def test_a_dict_of_one_key_is_a_plain_model() -> None:
    import keras
    from dictio import single_key_model

    ref = from_keras(single_key_model(), ModelFormat.KERAS, Path("one.keras"), "h")
    assert ref.output_names == ("digit",) and not ref.several_outputs and ref.num_classes == 10
    assert ref.keras_model is not None and not isinstance(ref.keras_model.output, dict)
    assert any("dict of one" in n for n in ref.notes)
    assert predict(ref, np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 10)
    image = keras.Input((8, 8, 1), name="image")
    one_in = keras.Model({"image": image}, keras.layers.Dense(3)(keras.layers.Flatten()(image)))
    ref = from_keras(one_in, ModelFormat.KERAS, Path("in.keras"), "h")
    assert ref.input_names == ("image",) and not ref.several_inputs and ref.input_shape == (8, 8, 1)
    assert predict(ref, np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 3)


def test_single_key_data_takes_plain_or_named_keys(tmp_path: Path) -> None:
    from dictio import write_single_key

    model, npz = write_single_key(tmp_path, epochs=1)
    ref = load_model(model)
    data, metric = data_and_metric(read_npz(npz), Preprocess(16.0), ref, None, "t")
    assert data.y_test.shape == (360,) and metric.output_index == 0
    with np.load(npz) as d:
        named = {(k + ".digit" if k.startswith("y_") else k): d[k] for k in d.files}  # y_train.digit, ...
    np.savez(tmp_path / "named.npz", **named)
    section = MetricSection(name=MetricName.ACCURACY, output="digit")
    data, metric = data_and_metric(read_npz(tmp_path / "named.npz"), Preprocess(16.0), ref, section, "t")
    assert data.y_test.shape == (360,) and metric.spec == "accuracy"


def _refused(model: object) -> str:
    with pytest.raises(ModelLoadError) as err:
        from_keras(model, ModelFormat.KERAS, Path("m.keras"), "h")  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
    return str(err.value)


def test_what_cannot_be_exported_by_its_key_is_refused() -> None:
    import keras
    from keras import layers

    image = keras.Input((4,), name="pixels")
    h = layers.Dense(4)(image)
    with pytest.warns(UserWarning):  # Keras warns about the mismatch too
        renamed = keras.Model({"image": image}, h)
    assert "the input dict's key 'image' maps to an Input named 'pixels'" in _refused(renamed)
    nested = keras.Model(image, {"heads": {"a": layers.Dense(2)(h), "b": layers.Dense(3)(h)}})
    assert "nested structure" in _refused(nested)
    bad = keras.Model(image, {"a.b": layers.Dense(2)(h), "c": layers.Dense(3)(h)})
    assert "must be distinct and without '.'" in _refused(bad)



def test_stages_still_refuse_a_dict_of_several_outputs(dict_outputs: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    cfg = tmp_path / "d.toml"
    cfg.write_text(f'[model]\npath = "{dict_outputs[0]}"\n[data]\npath = "{dict_outputs[1]}"\nscale = 16.0\n'
                   '[metric]\nname = "accuracy"\noutput = "digit"\n[distill]\nepochs = 1\n[targets.tflite]\n')
    assert main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[distill] with several inputs or outputs" in err, err
    assert not (tmp_path / "run").exists()

@pytest.mark.slow
def test_a_dict_of_one_key_goes_through_the_compression_stages(tmp_path: Path) -> None:
    """The stages train one-input, one-output models: a one-key dict output is one (about 20 s on 2 cores)."""
    import json

    from dictio import write_single_key

    from pipeline.cli import main

    model, npz = write_single_key(tmp_path)
    cfg = tmp_path / "one.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{npz}"\nscale = 16.0\n[quantize]\n'
                   'calibration_samples = 100\n[metric]\nname = "accuracy"\noutput = "digit"\n'
                   "[distill]\nepochs = 2\n[prune]\nepochs = 1\n[targets.tflite]\niterations = 5\nwarmup = 1\n")
    assert main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run")]) in (0, 1)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["distill", "prune"]
    assert any("dict of one" in n for n in report["reference"]["notes"])
    assert report["reference"]["metric"]["value"] > 0.75 and "outputs" not in report["eval_set"]
    assert "error" not in report["targets"]["tflite"] and "outputs" not in report["targets"]["tflite"]

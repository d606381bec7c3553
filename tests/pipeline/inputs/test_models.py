from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from legacy_h5 import write_keras2_h5

from pipeline.cache import content_hash as file_hash
from pipeline.errors import ModelLoadError
from pipeline.inputs.models import ModelFormat, load_model, predict
from pipeline.inputs.models import metric_value as accuracy


def _small():
    import keras

    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(10, activation="softmax")])


def test_keras2_h5_is_adapted_and_keeps_weights(tmp_path: Path) -> None:
    import keras

    model = _small()
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    model.layers[1].set_weights([np.full(4, 2.0), np.full(4, 0.5), np.full(4, 0.1), np.full(4, 3.0)])
    path = tmp_path / "old.h5"
    write_keras2_h5(path, model, (8, 8, 1))
    with pytest.raises(Exception):  # noqa: B017 - Keras 3 alone refuses the file
        keras.saving.load_model(path, compile=False)
    loaded = load_model(path)
    assert loaded.format is ModelFormat.H5 and loaded.input_shape == (8, 8, 1) and loaded.num_classes == 10
    assert "adapted" in loaded.notes[0] and "fused" in loaded.notes[0]
    assert loaded.keras_model is not None
    assert np.allclose(loaded.keras_model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_lambda_layers_are_refused_unless_allowed(tmp_path: Path) -> None:
    import keras

    inp = keras.Input((4,))
    out = keras.layers.Dense(2)(keras.layers.Lambda(lambda t: t * 2)(inp))
    path = tmp_path / "lam.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelLoadError, match="--allow-unsafe-model"):
        load_model(path)
    assert load_model(path, allow_unsafe=True).keras_model is not None


@pytest.mark.parametrize("name", ["missing.keras", "corrupt.keras", "model.onnx", "dir"])
def test_bad_model_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "corrupt.keras":
        path.write_bytes(b"not a zip")
    elif name == "model.onnx":
        path.write_bytes(b"x")
    elif name == "dir":
        path.mkdir()
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_saved_model_loads_without_keras(tmp_path: Path) -> None:
    model = _small()
    model.export(str(tmp_path / "sm"), verbose=False)
    loaded = load_model(tmp_path / "sm")
    assert loaded.format is ModelFormat.SAVED_MODEL and loaded.keras_model is None
    assert loaded.input_shape == (8, 8, 1) and loaded.num_classes == 10


def test_keras2_saved_model_with_optimizer_slots_is_revived(keras2_saved_model: tuple[Path, float],
                                                          digits_npz: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    path, keras2_acc = keras2_saved_model
    with pytest.raises(Exception, match="'_UserObject' object has no attribute 'add_slot'"):
        tf.saved_model.load(str(path))  # TF 2.21 without Keras 2
    loaded = load_model(path, work_dir=tmp_path)
    assert loaded.format is ModelFormat.SAVED_MODEL and loaded.path == path and loaded.keras_model is None
    assert loaded.content_hash == file_hash(path) and loaded.input_shape == (8, 8, 1) and loaded.num_classes == 10
    assert loaded.revived is not None and loaded.saved_model_dir == loaded.revived
    assert loaded.revived.is_relative_to(tmp_path)
    assert "TF1 loader" in loaded.notes[0] and "add_slot" in loaded.notes[0] and "same outputs" in loaded.notes[0]
    fn = tf.saved_model.load(str(loaded.revived)).signatures["serving_default"]
    assert list(fn.structured_input_signature[1]) == ["image"] and list(fn.structured_outputs) == ["probs"]
    with np.load(digits_npz) as d:
        acc = accuracy(predict(loaded, d["x_test"][..., None] / 16.0), d["y_test"])
    assert abs(acc - keras2_acc) < 1e-6


def test_unreadable_saved_model_is_one_error(tmp_path: Path) -> None:
    sm = tmp_path / "sm"
    (sm / "variables").mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"not a protobuf")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ModelLoadError, match="TF1 loader failed too") as info:
        load_model(sm, work_dir=work)
    assert str(sm) in str(info.value) and "\n" not in str(info.value)
    assert not any(work.iterdir())  # no half-written re-export left behind


def test_a_keras_model_saved_again_keeps_its_id_and_a_changed_one_does_not(tmp_path: Path) -> None:
    """The model id (every cache key's root) leaves out the save date in the .keras file's metadata.json: a
    notebook that saves the same model again reuses its cached exports; new weights give a new id."""
    import json
    import zipfile

    model = _small()
    model.save(tmp_path / "a.keras")
    meta = json.loads(zipfile.ZipFile(tmp_path / "a.keras").read("metadata.json"))
    with zipfile.ZipFile(tmp_path / "a.keras") as src, zipfile.ZipFile(tmp_path / "b.keras", "w") as dst:
        for item in src.infolist():  # the same model "saved a day later"
            data = src.read(item)
            dst.writestr(item, json.dumps({**meta, "date_saved": "2001-01-01@00:00:00"}) if item.filename ==
                         "metadata.json" else data)
    assert file_hash(tmp_path / "a.keras") != file_hash(tmp_path / "b.keras")  # the bytes differ
    ids = {name: load_model(tmp_path / name).content_hash for name in ("a.keras", "b.keras")}
    assert ids["a.keras"] == ids["b.keras"]
    model.layers[0].kernel.assign(model.layers[0].kernel.numpy() + 1.0)
    model.save(tmp_path / "c.keras")
    assert load_model(tmp_path / "c.keras").content_hash != ids["a.keras"]

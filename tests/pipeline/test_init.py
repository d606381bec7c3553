"""`edgepipe init`: starter configs for a classifier, an autoencoder and a recurrent model that the config
loader accepts, the classifier's built for tflite as written; an existing config is never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomllib

from pipeline.cli import main
from pipeline.config import MetricName, load_config
from pipeline.init_config import installed_backends


def _init(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["init", *args])
    return rc, capsys.readouterr().err


def test_classifier_config_builds_for_tflite(trained_cnn: Path, digits_npz: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cnn.toml"
    rc, err = _init(capsys, str(trained_cnn), "--data", str(digits_npz), "-o", str(cfg))
    assert rc == 0, err
    config = load_config(cfg)
    assert config.data is not None and config.data.scale == 16.0  # digits run 0..16
    assert config.metric is None and config.budget.max_accuracy_drop == 0.01
    assert config.targets.enabled() == installed_backends() and "tflite" in config.targets.enabled()
    assert config.resolve(config.model.path or "").resolve() == trained_cnn.resolve()
    rc = main(["--quiet", "build", str(cfg), "--target", "tflite", "--out", str(tmp_path / "run"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["passed"]
    assert report["targets"]["tflite"]["accuracy"] > 0.9


def test_autoencoder_gets_reconstruction_auc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    inp = keras.Input((16,))
    model = keras.Model(inp, keras.layers.Dense(16)(keras.layers.Dense(4, activation="relu")(inp)))
    model.save(tmp_path / "ae.keras")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 16)).astype(np.float32)
    np.savez(tmp_path / "ae.npz", x_train=x, y_train=np.zeros(64), x_test=x, y_test=(np.arange(64) % 2))
    rc, err = _init(capsys, str(tmp_path / "ae.keras"), "--data", str(tmp_path / "ae.npz"),
                    "-o", str(tmp_path / "ae.toml"))
    assert rc == 0, err
    config = load_config(tmp_path / "ae.toml")
    assert config.metric is not None and config.metric.name is MetricName.RECONSTRUCTION_AUC
    assert config.data is not None and config.data.scale == 255.0 and config.budget.max_metric_drop == 0.01
    # the same model with regression targets instead of 0/1 labels: mse
    np.savez(tmp_path / "reg.npz", x_train=x, y_train=x, x_test=x, y_test=x / 2)
    rc, err = _init(capsys, str(tmp_path / "ae.keras"), "--data", str(tmp_path / "reg.npz"),
                    "-o", str(tmp_path / "reg.toml"))
    assert rc == 0, err
    assert load_config(tmp_path / "reg.toml").metric.name is MetricName.MSE  # type: ignore[union-attr]


def test_recurrent_model_is_noted_and_refused_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import keras

    inp = keras.Input((8, 8))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.LSTM(6)(inp)))
    model.save(tmp_path / "rnn.keras")
    out = tmp_path / "rnn.toml"
    rc, err = _init(capsys, str(tmp_path / "rnn.keras"), "-o", str(out))
    assert rc == 0, err
    text = out.read_text()
    assert "recurrent layers (LSTM " in text and "input (8, 8), output (10)" in text
    assert tomllib.loads(text)["data"]["path"] == "data.npz"  # no --data: a placeholder to fill in
    load_config(out)
    before = out.read_text()
    rc, err = _init(capsys, str(tmp_path / "rnn.keras"), "-o", str(out))
    assert rc == 2 and err.count("\n") == 1 and "never overwrites" in err
    assert out.read_text() == before
    rc, err = _init(capsys, str(tmp_path / "missing.keras"), "-o", str(tmp_path / "x.toml"))
    assert rc == 2 and "model not found" in err and not (tmp_path / "x.toml").exists()


def _trained_autoencoder(folder: Path) -> tuple[Path, Path]:
    import keras
    from anomaly_data import write_anomaly_npz

    write_anomaly_npz(folder / "ad.npz", dim=24, latent=3, n_train=600, n_test=100, shift=0.6)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(6), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(24)])
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    with np.load(folder / "ad.npz") as d:
        model.fit(d["x_train"], d["x_train"], epochs=20, batch_size=32, verbose=0)
    model.save(folder / "ae.keras")
    return folder / "ae.keras", folder / "ad.npz"


def _trained_lstm(folder: Path, digits_npz: Path) -> tuple[Path, Path]:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.LSTM(24)(inp)))
    with np.load(digits_npz) as d:
        x, y = d["x_train"] / 16.0, d["y_train"]
    model.compile(keras.optimizers.Adam(5e-3), "sparse_categorical_crossentropy")
    model.fit(x.reshape(-1, 8, 8), y, epochs=15, batch_size=32, verbose=0)
    model.save(folder / "lstm.keras")
    return folder / "lstm.keras", digits_npz


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["autoencoder", "lstm"])
def test_init_configs_build_on_every_installed_target(kind: str, digits_npz: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The config `edgepipe init` writes, built as written: every target it enables passes its budget."""
    model, data = _trained_autoencoder(tmp_path) if kind == "autoencoder" else _trained_lstm(tmp_path, digits_npz)
    cfg = tmp_path / f"{kind}.toml"
    rc, err = _init(capsys, str(model), "--data", str(data), "-o", str(cfg))
    assert rc == 0, err
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert rc == 0, (err, {n: t.get("violations") for n, t in report["targets"].items()})
    assert set(report["targets"]) == set(installed_backends())
    if kind == "autoencoder":
        assert report["metric"]["name"] == "reconstruction_auc" and report["reference"]["metric_value"] > 0.9
    else:
        assert "metric" not in report and report["reference"]["accuracy"] > 0.85
    for name, t in report["targets"].items():
        assert "error" not in t and t["passed"], (name, t.get("error"), t.get("violations"))

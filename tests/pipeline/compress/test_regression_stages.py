"""The compression stages on models that are not classifiers: a small Dense anomaly-detection autoencoder
(reconstruction_auc) distilled and channel-pruned with MSE on its reconstruction, through the tflite target, and
a regressor (mse) channel-pruned and fine-tuned on its targets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from anomaly_data import write_anomaly_npz
from regression_data import train_regressor

from pipeline.cli import main

DIM, LATENT = 32, 4


def _anomaly_data(path: Path) -> None:
    write_anomaly_npz(path, dim=DIM, latent=LATENT, n_train=800, n_test=100, shift=0.5)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """32 -> 48 -> 16 -> 48 -> 32 (Dense, BatchNorm, ReLU) trained on normal samples."""
    import keras

    work = tmp_path_factory.mktemp("ae")
    _anomaly_data(work / "ad.npz")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((DIM,)), layers.Dense(48), layers.BatchNormalization(),
                              layers.Activation("relu"), layers.Dense(16), layers.Dense(48, activation="relu"),
                              layers.Dense(DIM)])
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    with np.load(work / "ad.npz") as d:
        model.fit(d["x_train"], d["x_train"], epochs=15, batch_size=32, verbose=0)
    model.save(work / "ae.keras")
    return work / "ae.keras", work / "ad.npz"


def _build(tmp_path: Path, model: Path, data: Path, sections: str) -> dict:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{data}"\nscale = 1.0\n{sections}\n'
                   "[targets.tflite]\niterations = 5\n")
    assert main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run"), "--no-cache"]) == 0
    return json.loads((tmp_path / "run" / "report.json").read_text())


def test_autoencoder_distilled_and_pruned_keeps_its_auc(autoencoder: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = autoencoder
    r = _build(tmp_path, model, data, '[metric]\nname = "reconstruction_auc"\n[budget]\nmax_metric_drop = 0.03\n'
               '[distill]\nstudent = "width:0.5"\nepochs = 15\nbatch_size = 32\n'
               '[prune]\nmethod = "channel"\nsparsity = 0.25\nepochs = 8\nbatch_size = 32')
    float_auc = r["reference"]["metric_value"]
    assert float_auc > 0.9, float_auc
    stages = {s["name"]: s for s in r["stages"]}
    assert list(stages) == ["distill", "prune"]
    for name, s in stages.items():
        assert s["accuracy"] is None and abs(s["metric_value"] - float_auc) <= 0.03, (name, s["metric_value"])
    assert stages["distill"]["details"]["best_val_loss"] is not None
    assert stages["prune"]["params"] < stages["distill"]["params"] < r["reference"]["params"]
    t = r["targets"]["tflite"]
    assert t["precision"] == "int8" and t["float_metric_value"] == stages["prune"]["metric_value"]
    assert t["metric_drop"] <= 0.03, t


def test_regressor_pruned_and_fine_tuned_on_its_targets(tmp_path: Path) -> None:
    train_regressor(tmp_path)
    r = _build(tmp_path, tmp_path / "reg.keras", tmp_path / "reg.npz",
               '[metric]\nname = "mse"\n[budget]\nmax_metric_drop = 0.02\n'
               '[prune]\nmethod = "channel"\nsparsity = 0.25\nepochs = 10\nbatch_size = 32\nlearning_rate = 2e-3')
    ref_mse = r["reference"]["metric_value"]
    (stage,) = r["stages"]
    assert stage["macs"] < r["reference"]["macs"] and stage["params"] < r["reference"]["params"]
    assert stage["accuracy"] is None and stage["metric_value"] <= ref_mse + 0.02, (stage["metric_value"], ref_mse)
    t = r["targets"]["tflite"]
    assert t["metric_drop"] <= 0.02, t


def test_stages_with_a_function_metric_are_one_line(autoencoder: tuple[Path, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A user's metric function says nothing about a loss: the stages refuse it (exit 2, one line, no run)."""
    (tmp_path / "aemetrics.py").write_text("def score(outputs, y):\n    return float(outputs.mean())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model, data = autoencoder
    cfg = tmp_path / "f.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{data}"\nscale = 1.0\n'
                   '[metric]\nfunction = "aemetrics:score"\nhigher_is_better = true\n[prune]\nepochs = 1\n'
                   "[targets.tflite]\niterations = 5\n")
    assert main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "with [metric] function remove [distill], [prune] and [decompose]" in err, err
    assert not (tmp_path / "run").exists()

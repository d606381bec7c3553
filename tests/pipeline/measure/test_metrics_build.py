"""Builds judged by the task's metric: an MLPerf-Tiny-style anomaly-detection autoencoder from a Keras 2 .h5
(reconstruction_auc) through all three runtimes, and every kind of bad [metric] input (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from anomaly_data import write_anomaly_npz
from legacy_h5 import write_keras2_h5

from pipeline.cli import main

# OpenVINO 2026.4.1 computes this int8 autoencoder wrongly at batch 1 with one thread on AVX-512 VNNI AMD EPYC
# (right with two, and on AVX2): two threads keep the test about edgepipe, not about that host kind.
TARGETS = ("[targets.tflite]\niterations = 5\n[targets.openvino]\niterations = 5\nthreads = 2\n"
           "[targets.tensorrt]\niterations = 5\n")


def _anomaly_data(path: Path) -> None:
    write_anomaly_npz(path, dim=640, latent=8, n_train=1200, n_test=150, shift=0.35)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """640 -> 64 -> 8 -> 64 -> 640 (Dense, BatchNorm, ReLU) trained on normal samples, saved as tf.keras 2 did."""
    import keras

    work = tmp_path_factory.mktemp("ad")
    _anomaly_data(work / "ad.npz")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((640,))] + [
        layer for units in (64, 8, 64) for layer in (layers.Dense(units), layers.BatchNormalization(),
                                                     layers.Activation("relu"))] + [layers.Dense(640)])
    model.compile("adam", "mse")
    with np.load(work / "ad.npz") as d:
        model.fit(d["x_train"], d["x_train"], epochs=20, batch_size=64, verbose=0)
    write_keras2_h5(work / "ae.h5", model, (640,))
    return work / "ae.h5", work / "ad.npz"


def _config(path: Path, model: Path, data: Path, metric: str, budget: str = "max_metric_drop = 0.01") -> Path:
    path.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{data}"\nscale = 1.0\n[metric]\n{metric}\n'
                    f"[budget]\n{budget}\n{TARGETS}")
    return path


def _independent_auc(run: Path, name: str, artifact: str) -> float:
    """The artifact run by hand in its runtime, scored with scikit-learn (not edgepipe's code)."""
    from sklearn.metrics import roc_auc_score

    with np.load(run / "data" / "eval.npz") as d:
        x, y = d["x"], d["y"]
    path = run / artifact
    if name == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
        i, o = interp.get_input_details()[0], interp.get_output_details()[0]
        outs = []
        for k in range(len(y)):
            s, z = i["quantization"]
            interp.set_tensor(i["index"], np.clip(np.round(x[k : k + 1] / s + z), -128, 127).astype(np.int8))
            interp.invoke()
            s, z = o["quantization"]
            outs.append((interp.get_tensor(o["index"]).astype(np.float32) - z) * s)
    elif name == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        model.reshape([len(y), *x.shape[1:]])  # the whole set in one call
        outs = [np.array(ov.Core().compile_model(model, "CPU").create_infer_request().infer([x])[0])]
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        outs = [sess.run(None, {sess.get_inputs()[0].name: x[k : k + 1]})[0] for k in range(len(y))]
    pred = np.concatenate(outs).reshape(len(y), -1)
    return float(roc_auc_score(y, np.mean((x.reshape(len(y), -1) - pred) ** 2, axis=1)))


@pytest.mark.slow
def test_autoencoder_reconstruction_auc_in_every_runtime(autoencoder: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = autoencoder
    cfg = _config(tmp_path / "ad.toml", model, data, 'name = "reconstruction_auc"')
    assert main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run")]) == 0
    r = json.loads((tmp_path / "run" / "report.json").read_text())
    assert r["metric"]["name"] == "reconstruction_auc" and r["metric"]["higher_is_better"] is True
    assert r["reference"]["format"] == "h5" and r["reference"]["accuracy"] is None
    float_auc = r["reference"]["metric_value"]
    assert 0.7 < float_auc < 0.99  # a task with room to lose
    for name, t in r["targets"].items():
        assert t["precision"] == "int8" and t["accuracy"] is None, name
        assert abs(t["metric_value"] - float_auc) <= 0.01, (name, t["metric_value"], float_auc)
        assert t["metric_drop"] == pytest.approx(float_auc - t["metric_value"], abs=1e-6)
        # OpenVINO sums in another order for another batch size and thread count: a few tied pairs may move
        tolerance = 2e-3 if name == "openvino" else 1e-9
        assert t["metric_value"] == pytest.approx(_independent_auc(tmp_path / "run", name, t["artifact"]),
                                                  abs=tolerance), name
    html = (tmp_path / "run" / "report.html").read_text()
    assert "reconstruction_auc" in html


def _exit2(argv: list[str], capsys: pytest.CaptureFixture[str], out: Path) -> str:
    rc = main(["--quiet", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))
    return err


@pytest.mark.parametrize(("metric", "message"), [
    ('name = "accuracy"', "accuracy needs a classifier"),
    ('name = "top_k"\nk = 3', "top_k with k = 3 needs a classifier"),
    ('name = "mse"\noutput = "scores"', "output 'scores' is not an output of the model"),
    ('function = "no_such_module_here:score"\nhigher_is_better = true', "cannot import it"),
    ('name = "mse"', "targets of shape () do not fit the model output (640,)"),
])
def test_bad_metric_input_is_one_line(autoencoder: tuple[Path, Path], tmp_path: Path, metric: str, message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    model, data = autoencoder
    cfg = _config(tmp_path / "bad.toml", model, data, metric)
    assert message in _exit2(["build", str(cfg), "--out", str(tmp_path / "run")], capsys, tmp_path / "run")


def test_a_model_that_is_not_a_classifier_needs_a_metric(autoencoder: tuple[Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    model, data = autoencoder
    cfg = tmp_path / "none.toml"
    cfg.write_text(f'[model]\npath = "{model}"\n[data]\npath = "{data}"\nscale = 1.0\n{TARGETS}')
    err = _exit2(["build", str(cfg), "--out", str(tmp_path / "run")], capsys, tmp_path / "run")
    assert "is not a classifier with class-id labels: set [metric]" in err


def test_function_metrics_that_return_nan_or_text_are_one_line(autoencoder: tuple[Path, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "usermetrics.py").write_text("def nan(outputs, y):\n    return float('nan')\n"
                                              "def text(outputs, y):\n    return 'good'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model, data = autoencoder
    for fn, message in (("nan", "gave nan"), ("text", "could not convert")):
        cfg = _config(tmp_path / f"{fn}.toml", model, data, f'function = "usermetrics:{fn}"\nhigher_is_better = true')
        err = _exit2(["build", str(cfg), "--out", str(tmp_path / "run")], capsys, tmp_path / "run")
        assert "cannot score the reference model" in err and message in err, err


def test_labels_that_do_not_suit_reconstruction_auc(autoencoder: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model, data = autoencoder
    with np.load(data) as d:
        arrays = dict(d)
    np.savez(tmp_path / "threes.npz", **{**arrays, "y_test": np.full(len(arrays["y_test"]), 3)})
    np.savez(tmp_path / "normal.npz", **{**arrays, "y_test": np.zeros(len(arrays["y_test"]), np.int64)})
    for npz, message in (("threes.npz", "0 = normal or 1 = anomalous"), ("normal.npz", "both normal (0) and")):
        cfg = _config(tmp_path / "auc.toml", model, tmp_path / npz, 'name = "reconstruction_auc"')
        assert message in _exit2(["build", str(cfg), "--out", str(tmp_path / "run")], capsys, tmp_path / "run")


@pytest.mark.parametrize(("text", "message"), [
    ('[metric]\nname = "f1"\n', "metric.name"),
    ('[metric]\nname = "top_k"\n', "top_k needs k"),
    ('[metric]\nname = "mse"\nhigher_is_better = false\n', "higher_is_better goes with function"),
    ('[metric]\nfunction = "m:f"\n', "function needs higher_is_better"),
    ('[metric]\nfunction = "not a module"\nhigher_is_better = true\n', "package.module:function"),
    ('[metric]\nname = "mse"\n[budget]\nmax_accuracy_drop = 0.01\n', "use max_metric_drop"),
])
def test_metric_config_is_validated(tmp_path: Path, text: str, message: str) -> None:
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nexample = "digits-cnn"\n' + text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(cfg)

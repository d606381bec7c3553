"""Quantization-aware fine-tuning: a classifier whose int8 artifact misses a 0.01 budget (one conv channel
scaled x30 with the dense layer scaled back: the float function is unchanged, the per-tensor activation range
is not) comes back within the budget after QAT, measured in LiteRT, OpenVINO and ONNX Runtime (Q/DQ), directly
and through `edgepipe build`'s accuracy-aware ladder; each artifact reads back with the learned ranges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration import CalibrationSet
from calibration.calibset import SamplingMethod
from calibration.learned import LearnedRange
from pipeline.cache import Cache
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.quantize.qat import QatConfig, QatModel, qat_model_for
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, get_target, runner

FACTOR = 30.0
BUDGET = 0.01
TARGETS = ("tflite", "openvino", "tensorrt")


def _digits(npz: Path) -> tuple[np.ndarray, ...]:
    with np.load(npz) as d:
        return ((d["x_train"][..., None] / 16.0).astype(np.float32), d["y_train"],
                (d["x_test"][..., None] / 16.0).astype(np.float32), d["y_test"])


def _heavy_tailed(x: np.ndarray, y: np.ndarray, folder: Path) -> FloatModel:
    import keras
    from conftest import tiny_cnn

    keras.utils.set_random_seed(0)
    model = tiny_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    conv2 = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][1]
    dense = model.layers[-1]
    (ck, cb), (dk, db) = conv2.get_weights(), dense.get_weights()
    ck[..., 0] *= FACTOR
    cb[0] *= FACTOR
    dk[0] /= FACTOR
    conv2.set_weights([ck, cb])
    dense.set_weights([dk, db])
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    model.export(str(folder / "saved_model"), format="tf_saved_model", verbose=False)
    return FloatModel(folder / "saved_model", folder / "model.keras", (8, 8, 1))


@pytest.fixture(scope="module")
def heavy(digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> FloatModel:
    x_tr, y_tr, _, _ = _digits(digits_npz)
    return _heavy_tailed(x_tr, y_tr, tmp_path_factory.mktemp("heavy"))


def _int8_accuracy(target: str, model: FloatModel, calib: CalibrationSet, out: Path, x: np.ndarray,
                   y: np.ndarray, opts: ExportOptions = ExportOptions()) -> float:
    result = get_target(target).export(model, calib, out, opts)
    return runner.evaluate(runner.open_session(out / result.artifact, 2), x, y)  # 2 threads: docs/how-it-works/guarantees.md


@pytest.mark.slow
def test_qat_recovers_a_model_that_int8_alone_misses(heavy: FloatModel, digits_npz: Path, tmp_path: Path) -> None:
    import keras

    x_tr, y_tr, x_te, y_te = _digits(digits_npz)
    reference = float(np.mean(keras.saving.load_model(heavy.keras_path).predict(x_te, verbose=0).argmax(1) == y_te))
    calib = CalibrationSet(x_tr[:64], "test", SamplingMethod.RANDOM, 0)
    cache = Cache(tmp_path / "cache")
    before, after = {}, {}
    for t in TARGETS:
        before[t] = _int8_accuracy(t, heavy, calib, tmp_path / f"{t}-int8", x_te, y_te)
        qat, why = qat_model_for(t, heavy, "heavy", (x_tr, y_tr, x_te, y_te), calib, cache, UI(quiet=True))
        assert qat is not None, why
        after[t] = _int8_accuracy(t, qat.model, calib, tmp_path / f"{t}-qat", x_te, y_te,
                                  ExportOptions(activation_ranges=qat.ranges))
    print(f"float {reference:.4f} int8 {before} after QAT {after}")  # shown with -s
    assert max(reference - a for a in before.values()) > BUDGET, "int8 alone should miss the budget somewhere"
    for t in TARGETS:
        assert reference - after[t] <= BUDGET, f"{t}: {after[t]:.4f} after QAT vs float {reference:.4f}"
    again, _ = qat_model_for("tensorrt", heavy, "heavy", (x_tr, y_tr, x_te, y_te), calib, cache, UI(quiet=True))
    assert again is not None and again.model.saved_model_dir.parent == qat.model.saved_model_dir.parent  # cached


def _tflite_scales(path: Path) -> list[float]:
    from ai_edge_litert.interpreter import Interpreter

    return [float(s) for d in Interpreter(model_path=str(path)).get_tensor_details()
            for s in d["quantization_parameters"]["scales"][:1] if len(d["quantization_parameters"]["scales"]) == 1]


def _onnx_activation_scales(path: Path) -> list[float]:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    weights = {i.name for i in g.initializer}
    return [float(inits[n.input[1]]) for n in g.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in weights and inits[n.input[1]].size == 1]


def _openvino_activation_limits(path: Path) -> list[tuple[float, float]]:
    import openvino as ov

    limits = []
    for op in ov.Core().read_model(str(path)).get_ordered_ops():
        src = op.input(0).get_source_output().get_node() if op.get_type_name() == "FakeQuantize" else None
        if src is not None and src.get_type_name() != "Constant":
            lo, hi = (op.input(i).get_source_output().get_node().get_data() for i in (1, 2))
            limits.append((float(np.min(lo)), float(np.max(hi))))
    return limits


def _read_back(target: str, folder: Path, artifact: str) -> list[float] | list[tuple[float, float]]:
    path = folder / artifact
    return {"tflite": _tflite_scales, "tensorrt": _onnx_activation_scales,
            "openvino": _openvino_activation_limits}[target](path)


def _uses(target: str, values: list, r: LearnedRange) -> bool:
    """Whether the artifact quantizes some tensor with the learned range `r`."""
    if target == "openvino":
        return any(np.isclose(lo, r.lo, rtol=1e-5, atol=1e-7) and np.isclose(hi, r.hi, rtol=1e-5) for lo, hi in values)
    return any(np.isclose(s, r.scale(), rtol=1e-5) for s in values)


def _names(model: FloatModel) -> tuple[str, str, str]:
    """The first activation's, the second convolution's and the logits' layer names (Keras numbers layer names
    by how many were built before in the process: "conv2d_1" alone, "conv2d_17" after other tests)."""
    import keras

    assert model.keras_path is not None
    layers = keras.saving.load_model(model.keras_path, compile=False).layers
    acts = [la.name for la in layers if isinstance(la, (keras.layers.Activation, keras.layers.ReLU))]
    convs = [la.name for la in layers if isinstance(la, keras.layers.Conv2D)]
    return acts[0], convs[1], layers[-1].name


def _openvino_weights_on_their_grid(ir: Path, keras_path: Path) -> bool:
    """The IR's int8 constants of the logits MatMul are the QAT model's snapped kernel / (max|w| / 63):
    the fine-tuned weights already sit on NNCF's 7-bit grid (NNCF may put a channel's largest weight one
    step further, 64: the end of its grid is not exactly ours)."""
    import keras
    import openvino as ov

    kernel = keras.saving.load_model(keras_path, compile=False).layers[-1].get_weights()[0]
    ints = [op.get_data() for op in ov.Core().read_model(str(ir)).get_ordered_ops()
            if op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() == "i8"][-1]
    steps = kernel / (np.abs(kernel).max(axis=0, keepdims=True) / 63.0)
    off = np.abs(np.round(steps).T - ints)
    return np.allclose(steps, np.round(steps), atol=1e-3) and off.max() <= 1 and (off > 0).sum() <= ints.shape[0]


def _qat(target: str, model: FloatModel, data: tuple[np.ndarray, ...], calib: CalibrationSet, cache: Cache) -> QatModel:
    qat, why = qat_model_for(target, model, "heavy", data, calib, cache, UI(quiet=True), QatConfig(epochs=1))
    assert qat is not None, why
    return qat


@pytest.mark.slow
def test_learned_ranges_are_the_ones_in_each_artifact(heavy: FloatModel, digits_npz: Path, tmp_path: Path) -> None:
    """Read each artifact: the .tflite tensors' scales, the ONNX activation QuantizeLinear scales (symmetric:
    max|range| / 127, zero point 0) and the IR's activation FakeQuantize limits are the learned ones; the same
    model exported without them (calibrated min-max) has none of them."""
    x_tr, y_tr, x_te, y_te = _digits(digits_npz)
    data = (x_tr[:512], y_tr[:512], x_te[:128], y_te[:128])
    calib = CalibrationSet(x_tr[:32], "test", SamplingMethod.RANDOM, 0)
    act, conv2, logits = _names(heavy)
    for t in TARGETS:
        qat = _qat(t, heavy, data, calib, Cache(tmp_path / "cache"))
        assert {r.layer for r in qat.ranges} >= {act, conv2}
        assert all(r.symmetric == (t == "tensorrt") for r in qat.ranges)
        learned = get_target(t).export(qat.model, calib, tmp_path / t, ExportOptions(activation_ranges=qat.ranges))
        plain = get_target(t).export(qat.model, calib, tmp_path / f"{t}-plain", ExportOptions())
        got, calibrated = _read_back(t, tmp_path / t, learned.artifact), _read_back(t, tmp_path / f"{t}-plain", plain.artifact)
        inner = [r for r in qat.ranges if r.layer != logits]  # NNCF puts no FakeQuantize on the logits
        for r in inner:
            assert _uses(t, got, r), f"{t}: {r.layer} learned range {r.lo:.4f}..{r.hi:.4f} not in the artifact"
            assert not _uses(t, calibrated, r), f"{t}: {r.layer}: calibration alone gives the same range"
        assert any("quantization-aware" in n for n in learned.notes)
        if t == "openvino":
            assert qat.model.keras_path is not None
            assert _openvino_weights_on_their_grid(tmp_path / t / learned.artifact, qat.model.keras_path)


def test_models_qat_cannot_take_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """No .keras file, or recurrent layers: (None, one line), nothing cached, no exception."""
    import keras

    x = np.random.default_rng(0).random((16, 4, 3), np.float32)
    inp = keras.Input((4, 3))
    rnn = keras.Model(inp, keras.layers.Dense(2)(keras.layers.SimpleRNN(4)(inp)))
    rnn.save(tmp_path / "rnn.keras")
    calib = CalibrationSet(x[:8], "test", SamplingMethod.RANDOM, 0)
    data = (x, np.zeros(16, np.int64), x, np.zeros(16, np.int64))
    cache = Cache(tmp_path / "cache")
    for model, expected in ((FloatModel(tmp_path / "sm", None, (4, 3)), "no Keras model file"),
                            (FloatModel(tmp_path / "sm", tmp_path / "rnn.keras", (4, 3)), "recurrent layers")):
        qat, why = qat_model_for("tflite", model, "m", data, calib, cache, UI(quiet=True), QatConfig(epochs=1))
        assert qat is None and why is not None and expected in why and "\n" not in why
    assert not any((tmp_path / "cache").rglob("qat.json"))


@pytest.mark.parametrize(("text", "expected"), [("qat = 1", "quantize.qat"), ('qat = "yes"', "quantize.qat"),
                                                ("qat_epochs = 0", "quantize.qat_epochs"),
                                                ("qat_epoch = 3", "quantize.qat_epoch: unknown key")])
def test_qat_config_keys_are_validated(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f'[model]\npath = "m.keras"\n[data]\npath = "d.npz"\n[quantize]\n{text}\n[targets.tflite]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value) and "\n" not in str(info.value)
    path.write_text('[model]\npath = "m.keras"\n[data]\npath = "d.npz"\n[quantize]\nqat = true\nqat_epochs = 3\n'
                    "[targets.tflite]\n")
    cfg = load_config(path)
    assert cfg.quantize.qat is True and cfg.quantize.qat_epochs == 3
    assert main(["--quiet", "build", str(tmp_path / "missing.toml")]) == 2


@pytest.mark.slow
def test_build_ladder_recovers_with_qat(heavy: FloatModel, digits_npz: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`[quantize] qat = true` with max_accuracy_drop 0.01: the plain int8 attempt misses the budget, the QAT
    attempt meets it and ships; report.json shows both accuracies; the shipped artifact measures the same."""
    cfg = tmp_path / "qat.toml"
    cfg.write_text(f'[model]\npath = "{heavy.keras_path}"\n\n[data]\npath = "{digits_npz}"\nscale = 16.0\n\n'
                   '[quantize]\ncalibration_samples = 64\ncalibration = "minmax"\nqat = true\nqat_epochs = 10\n\n'
                   "[budget]\nmax_accuracy_drop = 0.01\n\n[targets.tensorrt]\niterations = 5\nwarmup = 1\n")
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    report = json.loads(capsys.readouterr().out)
    t = report["targets"]["tensorrt"]
    first, qat = t["attempts"][0], t["attempts"][1]
    print(json.dumps(t["qat"]), [(a["accuracy"], a["qat"]) for a in t["attempts"]])  # shown with -s
    assert not first["qat"] and not first["passed"] and first["accuracy_drop"] > BUDGET
    assert qat["qat"] and qat["passed"] and rc == 0 and t["passed"]
    assert t["qat"]["accuracy_before"] == first["accuracy"] and t["qat"]["accuracy_after"] == qat["accuracy"]
    assert t["qat"]["epochs"] == 10 and t["accuracy"] == pytest.approx(qat["accuracy"], abs=1e-9)
    run = tmp_path / "run"
    _, _, x_te, y_te = _digits(digits_npz)
    shipped = runner.evaluate(runner.open_session(run / t["artifact"], 1, exact=True), x_te, y_te)
    assert shipped == pytest.approx(qat["accuracy"], abs=1e-9)
    assert json.loads((run / "report.json").read_text())["targets"]["tensorrt"]["qat"] == t["qat"]


@pytest.mark.slow
def test_qat_without_a_budget_ships_the_qat_artifact(heavy: FloatModel, digits_npz: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`qat = true` and no accuracy budget: both artifacts are measured, the QAT one ships, exit 0."""
    cfg = tmp_path / "qat.toml"
    cfg.write_text(f'[model]\npath = "{heavy.keras_path}"\n\n[data]\npath = "{digits_npz}"\nscale = 16.0\n\n'
                   '[quantize]\ncalibration_samples = 64\nqat = true\nqat_epochs = 2\n\n'
                   "[targets.tflite]\niterations = 5\nwarmup = 1\n")
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    t = json.loads(capsys.readouterr().out)["targets"]["tflite"]
    assert rc == 0 and [a["qat"] for a in t["attempts"]] == [False, True]
    assert t["qat"]["epochs"] == 2 and t["accuracy"] == pytest.approx(t["qat"]["accuracy_after"], abs=1e-9)
    assert any("quantization-aware:" in n for n in t["notes"])

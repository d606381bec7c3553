"""Accuracy-aware int8 end to end: a model whose float function is intact but whose activations carry
outlier channels (two channels x500, the next conv scaled back) breaks plain min-max int8 (one class for
every sample); the accuracy-aware mode's SmoothQuant-style migration in Keras brings every target back within
BUDGET with no layer left in float. Plus the fallback order, the give-up path and the latency gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from outliers import scale_through  # one outlier model for every test (conftest's outlier_model)

from pipeline.cli import main
from pipeline.quantize.accuracy_aware import MAX_ATTEMPTS, METHOD_ORDER

BUDGET = 0.03
# Sized on: an AVX-512 VNNI AMD EPYC, the suite's trained_cnn in two sessions (it is retrained each one):
# plain min-max int8 drops 0.85-0.86 on every target (the validation split's 287 samples, nearly all
# predicted as one class); after Keras CLE the drop is -0.004..0.0 on the validation split and 0.0-0.003 on
# the test split (360), as the trained CNN's own int8 drop is. BUDGET leaves 0.027 (8 of 287 samples) to a
# host whose kernels or training round differently.


def _config(path: Path, model: Path, data: Path, extra: str, targets: tuple[str, ...], target_extra: str = "") -> Path:
    tables = "\n".join(f"[targets.{t}]\niterations = 5\nwarmup = 1\n{target_extra}" for t in targets)
    path.write_text(f'[model]\npath = "{model}"\n\n[data]\npath = "{data}"\nscale = 16.0\n\n'
                    f'[quantize]\ncalibration_samples = 64\ncalibration = "minmax"\n\n{extra}\n{tables}\n')
    return path


def _build(cfg: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    rc = main(["--quiet", "build", str(cfg), "--out", str(out), "--json"])
    return rc, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def outlier_run(outlier_model: Path, digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, Path]:
    work = tmp_path_factory.mktemp("outliers")  # outlier_model: conftest's, made by tests/outliers.py
    cfg = _config(work / "outliers.toml", outlier_model, digits_npz,
                  f"[budget]\nmax_accuracy_drop = {BUDGET}\n", ("tflite", "openvino", "tensorrt"))
    rc = main(["--quiet", "build", str(cfg), "--out", str(work / "run")])
    return rc, json.loads((work / "run" / "report.json").read_text()), work / "run"


@pytest.mark.slow
def test_outlier_channels_break_minmax_and_equalization_recovers(outlier_run: tuple[int, dict, Path]) -> None:
    """Every target: plain min-max int8 misses BUDGET by far on the split the ladder judges, the Keras CLE
    attempt meets it and ships; the shipped entry (test split) is within BUDGET, and its accuracy is what the
    artifact's runtime gives when run by hand on data/eval.npz."""
    from runtimes import accuracy, eval_set

    rc, report, run = outlier_run
    for name, t in report["targets"].items():  # shown with -s
        steps = [(a["equalization"], a["calibration"], a["equalize"], len(a["float_layers"]),
                  round(a["accuracy_drop"], 4)) for a in t["attempts"]]
        print(f"{name}: final {t['accuracy']:.4f} drop {t['accuracy_drop']:+.4f} {steps}")
    x, y = eval_set(run / "data" / "eval.npz")
    for name, t in report["targets"].items():
        plain, cle = t["attempts"]
        assert plain["calibration"] == "minmax" and plain["float_layers"] == [] and not plain["equalize"]
        assert not plain["equalization"] and not plain["cross_layer_equalization"]
        assert not plain["passed"] and plain["accuracy_drop"] > 0.5
        assert cle["equalization"] == "smoothquant" and cle["passed"] and cle["accuracy_drop"] <= BUDGET
        assert t["equalization"]["method"] == "smoothquant" and "SmoothQuant" in t["equalization"]["name"]
        assert t["equalization"]["pairs"][0]["spread_before"] > 100
        assert t["cross_layer_equalization"] == t["equalization"]["pairs"]  # the earlier key, still there
        assert t["accuracy_drop"] <= BUDGET and t["passed"] and t["precision"] == "int8", name
        assert t["float_layers"] == [], f"{name}: float layers {t['float_layers']}"
        assert t["accuracy"] == accuracy(run / t["artifact"], x, y), name
    assert rc == 0 and report["passed"]


def _tflite_float_matmuls(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details()
           if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert len(ops) >= 3
    return [f"{op['op_name']}#{op['index']}" for op in ops
            if any(dtypes[i] not in (np.int8, np.int32) for i in op["inputs"] if i >= 0)]


def _onnx_float_matmuls(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path)).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    ops = [n for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert len(ops) >= 3
    return [n.name for n in ops if any(made_by.get(i) != "DequantizeLinear" for i in n.input[:2])]


def _openvino_float_matmuls(path: Path) -> list[str]:
    import openvino as ov

    def source(node: object, port: int) -> object:
        return node.input_value(port).get_node()  # type: ignore[attr-defined]

    def quantized_input(node: object) -> bool:  # FakeQuantize [-> Transpose/Reshape (layout only)]
        while node.get_type_name() in ("Transpose", "Reshape"):  # type: ignore[attr-defined]
            node = source(node, 0)
        return node.get_type_name() == "FakeQuantize"  # type: ignore[attr-defined]

    def int8_weights(node: object) -> bool:  # i8 Constant -> Convert -> (Subtract) -> Multiply [-> Reshape]
        while node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):  # type: ignore[attr-defined]
            node = source(node, 0)
        return node.get_type_name() == "Constant" and node.get_element_type() == ov.Type.i8  # type: ignore[attr-defined]

    model = ov.Core().read_model(str(path))
    ops = [op for op in model.get_ops() if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")]
    assert len(ops) >= 3
    return [op.get_friendly_name() for op in ops
            if not quantized_input(source(op, 0)) or not int8_weights(source(op, 1))]


@pytest.mark.slow
def test_outlier_artifacts_have_every_conv_and_matmul_integer(outlier_run: tuple[int, dict, Path]) -> None:
    """Read each shipped artifact: every conv/matmul takes int8 activations and int8 weights."""
    _, _, run = outlier_run
    assert _tflite_float_matmuls(run / "tflite" / "model_int8.tflite") == []
    assert _onnx_float_matmuls(run / "tensorrt" / "model_qdq.onnx") == []
    assert _openvino_float_matmuls(run / "openvino" / "model_int8.xml") == []


def _kept(attempt: dict) -> list[str]:
    """The layers an attempt kept out of int8: in float, or (tflite) at 16x8."""
    return list(attempt["float_layers"]) + list(attempt.get("int16_layers", []))


def _keras_equalized(attempts: list[dict]) -> list[dict]:
    """The attempts right after the first that export a Keras-equalized model with the first's options."""
    first, found = attempts[0], []
    for a in attempts[1:]:
        if not a["equalization"] or a["calibration"] != first["calibration"] or a["equalize"] or _kept(a) or a["qat"]:
            break
        found.append(a)
    return found


def _fallback_order_holds(name: str, t: dict) -> None:
    attempts = t["attempts"]
    assert 1 <= len(attempts) <= MAX_ATTEMPTS
    assert [a["passed"] for a in attempts[:-1]] == [False] * (len(attempts) - 1)
    assert attempts[-1]["passed"] == t["passed"]
    first = attempts[0]
    assert not (first["equalization"] or first["cross_layer_equalization"] or first["equalize"] or _kept(first))
    keras_eq = _keras_equalized(attempts)
    if len(attempts) > 1:  # every model here has layer pairs to migrate
        assert [a["equalization"] for a in keras_eq] in (["smoothquant"], ["smoothquant", "cle"]), \
            "SmoothQuant-style migration first, then cross-layer equalization where it can help"
    assert all(a["cross_layer_equalization"] == bool(a["equalization"]) for a in attempts), "the earlier key"
    start = 1 + len(keras_eq)
    plain = [a for a in attempts[start:] if not a["equalize"] and not _kept(a) and not a["qat"]]
    expected = [m for m in METHOD_ORDER if m != first["calibration"]]
    assert [a["calibration"] for a in plain] == expected[: len(plain)], "then the methods, in order"
    eq = [i for i, a in enumerate(attempts) if a["equalize"] and not _kept(a)]
    assert len(eq) <= (1 if name == "openvino" else 0), "equalize only where the backend has it, once"
    assert all(i == start + len(plain) for i in eq), "equalize after every calibration method"
    qat = [i for i, a in enumerate(attempts) if a["qat"] and not _kept(a)]
    assert len(qat) <= 1 and all(i == start + len(plain) + len(eq) for i in qat), "QAT after equalize, once"
    floats = [a for a in attempts if _kept(a)]
    if floats:
        assert len(plain) == len(expected) and attempts.index(floats[0]) == start + len(plain) + len(eq) + len(qat)
        order = [r["layer"] for r in t["sensitivity"]]
        for k, a in enumerate(floats, start=1):
            assert sorted(_kept(a)) == sorted(order[:k]), "one more layer at a time, most sensitive first"
            assert name == "tflite" or not a["int16_layers"], "16x8 by scope is LiteRT's alone"
            assert (a["calibration"], a["equalize"]) == (floats[0]["calibration"], floats[0]["equalize"])
    if t["passed"]:
        assert t["float_layers"] == attempts[-1]["float_layers"]
        assert t.get("int16_layers", []) == attempts[-1]["int16_layers"]
        assert t["calibration"] == attempts[-1]["calibration"]


@pytest.mark.slow
def test_fallback_order(outlier_run: tuple[int, dict, Path]) -> None:
    _, report, _ = outlier_run
    for name, t in report["targets"].items():
        _fallback_order_holds(name, t)


@pytest.mark.slow
def test_nothing_meets_the_budget_keeps_the_best_and_exits_1(
        trained_cnn: Path, digits_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pruned hard without fine-tuning, the float model itself is far below the reference: no int8 attempt can
    meet a zero drop, so every fallback is tried and the most accurate artifact ships with a note."""
    extra = '[prune]\nmethod = "magnitude"\nsparsity = 0.9\nepochs = 0\n\n[budget]\nmax_accuracy_drop = 0.0\n'
    cfg = _config(tmp_path / "hopeless.toml", trained_cnn, digits_npz, extra, ("tensorrt",))
    rc, report = _build(cfg, tmp_path / "run", capsys)
    t = report["targets"]["tensorrt"]
    assert rc == 1 and report["passed"] is False and t["passed"] is False
    assert not any(a["passed"] for a in t["attempts"]) and len(t["attempts"]) <= MAX_ATTEMPTS
    # the most accurate attempt on the validation split ships; the test split measures it once
    assert t["selection"]["validation_value"] == max(a["accuracy"] for a in t["attempts"])
    assert t["selection"]["test_value"] == t["accuracy"] and t["selection"]["candidates"] == len(t["attempts"])
    assert any("no attempt met max_accuracy_drop" in n for n in t["notes"])
    _fallback_order_holds("tensorrt", t)
    qat = [a for a in t["attempts"] if a["qat"] and not a["float_layers"]]  # QAT before any float layer
    assert len(qat) == 1 and t["qat"]["accuracy_after"] == qat[0]["accuracy"] and t["qat"]["epochs"] == 5
    assert all(r["sqnr_db"] is not None for r in t["sensitivity"])


def _residual_tanh_cnn(path: Path) -> Path:
    """Residual adds and tanh: ONNX Runtime's CPU provider leaves these in float between Q/DQ pairs, so the
    symmetric s8 Q/DQ model runs several times slower than fp32 (0.24 vs 0.06 ms here)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(16, 3, padding="same")(inp)
    for _ in range(6):
        x = layers.Activation("tanh")(layers.Add()([x, layers.Conv2D(16, 3, padding="same")(x)]))
    out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(path)
    return path


def test_ship_faster_float(digits_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """deploy_on_host = true: this host is the deployment machine, so its latency decides; the s8 Q/DQ
    residual-tanh model runs several times slower than fp32 on ONNX Runtime's CPU provider on every host seen."""
    model = _residual_tanh_cnn(tmp_path / "residual.keras")
    cfg = _config(tmp_path / "gate.toml", model, digits_npz, "", ("tensorrt",),
                  "ship_faster_float = true\ndeploy_on_host = true\n")
    cfg.write_text(cfg.read_text().replace("iterations = 5\nwarmup = 1", "iterations = 50\nwarmup = 5"))
    rc = main(["build", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    t = report["targets"]["tensorrt"]
    assert rc == 0 and "attempts" not in t  # no accuracy budget: no accuracy-aware search
    assert t["precision"] == "float32" and t["artifact"] == t["float_artifact"] == "tensorrt/model_fp32.onnx"
    assert t["int8"]["artifact"] == "tensorrt/model_qdq.onnx"
    assert abs(t["accuracy"] - report["reference"]["accuracy"]) < 0.01  # the float twin of the reference
    assert t["latency_ms"]["median"] < t["int8"]["latency_ms"]["median"]
    assert any("shipping the float artifact" in n for n in t["notes"])
    assert "shipping the float artifact" in captured.err


def test_ship_faster_float_never_acts_on_a_latency_of_another_kind_of_device(
        digits_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same model and setting without deploy_on_host: ONNX Runtime on this CPU is not TensorRT on a Jetson,
    so however much faster fp32 runs here, int8 ships and the report says why."""
    model = _residual_tanh_cnn(tmp_path / "residual.keras")
    cfg = _config(tmp_path / "gate.toml", model, digits_npz, "", ("tensorrt",), "ship_faster_float = true\n")
    rc = main(["--quiet", "build", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    t = json.loads(capsys.readouterr().out)["targets"]["tensorrt"]
    assert rc == 0 and t["precision"] == "int8" and t["artifact"] == "tensorrt/model_qdq.onnx" and "int8" not in t
    assert any("latency is informational here" in n and "not with TensorRT" in n for n in t["notes"])


def test_slower_int8_warns_with_both_medians(digits_npz: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The latency gate's warning is on by default: a real measured pair (the s8 Q/DQ residual-tanh model runs
    several times slower than fp32 on ONNX Runtime's CPU provider) warns on the terminal and in build.log,
    naming both medians and offering ship_faster_float; the int8 artifact still ships (the option is off)."""
    model = _residual_tanh_cnn(tmp_path / "residual.keras")
    cfg = _config(tmp_path / "warn.toml", model, digits_npz, "", ("tensorrt",), "deploy_on_host = true\n")
    cfg.write_text(cfg.read_text().replace("iterations = 5\nwarmup = 1", "iterations = 50\nwarmup = 5"))
    rc = main(["build", str(cfg), "--out", str(tmp_path / "run"), "--json"])
    captured = capsys.readouterr()
    t = json.loads(captured.out)["targets"]["tensorrt"]
    assert rc == 0 and t["precision"] == "int8" and t["int8_speedup"] < 1.0
    int8_ms, float_ms = t["latency_ms"]["median"], t["float_latency_ms"]["median"]
    err = " ".join(captured.err.split())  # the terminal wraps long lines
    warning = f"int8 is not faster than float on host: int8 median {int8_ms:.3f} ms vs float median {float_ms:.3f} ms"
    assert warning in err and "set ship_faster_float = true under [targets.tensorrt]" in err, captured.err
    assert f"int8 median {int8_ms:.3f} ms" in (tmp_path / "run" / "build.log").read_text()


def _depth_multiplier_cnn(npz: Path, dest: Path) -> Path:
    """conv -> BN -> ReLU -> DepthwiseConv2D (depth multiplier 2) -> ReLU -> 1x1 conv -> pool -> dense, trained,
    with two post-BN channels x FACTOR and the depthwise filters reading them / FACTOR (same function). The
    SmoothQuant-style migration does not cross a depthwise layer with a depth multiplier (its channel groups
    stop there), cross-layer equalization does (input channel c of the depthwise scales its M filters)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    with np.load(npz) as d:
        x, y = (d["x_train"][..., None] / 16.0).astype(np.float32), d["y_train"]
    inp = keras.Input((8, 8, 1))
    h = L.ReLU()(L.BatchNormalization(momentum=0.9, name="bn")(L.Conv2D(12, 3, padding="same", name="c1")(inp)))
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu", name="dw")(h)
    h = L.Conv2D(24, 1, activation="relu")(h)
    model = keras.Model(inp, L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(h)))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    bn, dw = model.get_layer("bn"), model.get_layer("dw")
    channels = np.argsort(-np.abs(keras.Model(inp, bn.output).predict(x[:256], verbose=0)).max(axis=(0, 1, 2)))[:2]
    scale_through(bn, dw, channels)
    model.save(dest)
    return dest


@pytest.mark.slow
def test_cle_is_its_own_attempt_and_the_report_says_it_shipped(digits_npz: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The outliers sit before a depthwise layer with depth multiplier 2: the migration attempt leaves them
    (misses the budget), the cross-layer equalization attempt, tried after it from the same model, removes
    them and ships; the report names the method that shipped and keeps the earlier key."""
    model = _depth_multiplier_cnn(digits_npz, tmp_path / "dm.keras")
    cfg = _config(tmp_path / "dm.toml", model, digits_npz, "[budget]\nmax_accuracy_drop = 0.02\n", ("tflite",))
    rc, report = _build(cfg, tmp_path / "run", capsys)
    t = report["targets"]["tflite"]
    print([(a["equalization"], a["calibration"], round(a["accuracy_drop"], 4)) for a in t["attempts"]])  # with -s
    first, migrated, equalized = t["attempts"][:3]
    assert not first["passed"] and first["accuracy_drop"] > 0.1
    assert migrated["equalization"] == "smoothquant" and not migrated["passed"]
    assert equalized["equalization"] == "cle" and equalized["passed"] and equalized["cross_layer_equalization"]
    assert equalized["calibration"] == first["calibration"] and len(t["attempts"]) == 3
    assert t["equalization"]["method"] == "cle" and "Nagel" in t["equalization"]["name"]
    assert any(p["head"] == "c1" and p["max_scale"] > 100 for p in t["equalization"]["pairs"])
    assert t["passed"] and rc == 0

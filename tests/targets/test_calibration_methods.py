"""Every calibration method on every backend gives a working int8 artifact that says which method it used;
sensitivity tables name layers the backend then keeps out of int8 (tflite: 16x8, the others: float)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration import make_calibration_set
from calibration.ranges import METHODS
from pipeline.cache import Cache
from pipeline.quantize.export import ExportRequest, export_batch, target_sensitivity
from pipeline.ui import UI
from targets import ExportOptions, FloatModel, runner

TARGETS = ("tflite", "openvino", "tensorrt")


@pytest.fixture(scope="module")
def setup(trained_cnn: Path, digits_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    import keras

    work = tmp_path_factory.mktemp("calib-methods")
    keras.saving.load_model(trained_cnn).export(str(work / "sm"), format="tf_saved_model", verbose=False)
    with np.load(digits_npz) as d:
        x_tr, y_tr = d["x_train"][..., None] / 16.0, d["y_train"]
        x, y = (d["x_test"][..., None] / 16.0).astype(np.float32), d["y_test"]
    calib = make_calibration_set(x_tr, y_tr, 48)
    model = FloatModel(work / "sm", trained_cnn, (8, 8, 1))
    float_acc = float(np.mean(np.argmax(keras.saving.load_model(trained_cnn).predict(x, verbose=0), 1) == y))
    return model, calib, x, y, float_acc, Cache()


def _accuracy(artifact: Path, x: np.ndarray, y: np.ndarray) -> float:
    return runner.evaluate(runner.open_session(artifact), x, y)


@pytest.mark.parametrize("target", TARGETS)
def test_every_method_exports_a_working_int8_artifact(setup: tuple, target: str) -> None:
    model, calib, x, y, float_acc, cache = setup
    options = [ExportOptions(calibration_method=m) for m in METHODS]
    batch = export_batch(ExportRequest(target, model, "trained-cnn", calib, cache, UI(quiet=True)), options)
    assert batch.error is None and len(batch.exported) == len(METHODS)
    blobs = set()
    for method, exp in zip(METHODS, batch.exported, strict=True):
        r = exp.result
        assert r.calibration == method and r.precision == "int8" and r.float_layers == ()
        assert any(f"calibration {method}" in n for n in r.notes), r.notes
        acc = _accuracy(exp.folder / r.artifact, x, y)
        assert acc >= float_acc - 0.05, f"{target}/{method}: {acc} vs float {float_acc}"
        blobs.add(b"".join((exp.folder / f).read_bytes() for f in r.files))
    assert len(blobs) > 1, f"{target}: every method gave the same artifact"


def _float_ops(target: str, artifact: Path) -> int:
    """How much of the artifact is left unquantized, in the backend's own terms."""
    if target == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(artifact)).get_tensor_details()
        return sum(t["dtype"] not in (np.int8, np.int32) for t in details)  # float32, or int16 (and its int64 bias)
    if target == "openvino":
        import openvino as ov

        ops = ov.Core().read_model(str(artifact)).get_ops()
        return -sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in ops)
    import onnx

    return -sum(n.op_type == "DequantizeLinear" for n in onnx.load(str(artifact)).graph.node)


@pytest.mark.parametrize("target", TARGETS)
def test_sensitivity_names_layers_the_backend_keeps_in_float(setup: tuple, target: str) -> None:
    model, calib, x, y, _, cache = setup
    req = ExportRequest(target, model, "trained-cnn", calib, cache, UI(quiet=True))
    table, batch = target_sensitivity(req, ExportOptions(), (x[:64], y[:64]), float_variants=1)
    assert len(table) >= 2
    for r in table:
        assert set(r) == {"layer", "sqnr_db", "accuracy"} and isinstance(r["layer"], str)
        assert isinstance(r["sqnr_db"], float) and (r["accuracy"] is None or 0.0 <= r["accuracy"] <= 1.0)
    keys = [(float("inf") if r["accuracy"] is None else r["accuracy"], r["sqnr_db"]) for r in table]
    assert keys == sorted(keys), "most sensitive first"
    assert batch.error is None and len(batch.exported) == 1
    kept = batch.exported[0].result
    assert kept.float_layers + kept.int16_layers == (table[0]["layer"],)
    if target == "tflite":  # 16x8 by scope for the ops whose LiteRT 16x8 kernel is fast, float for the others
        from targets import tflite_quantizer

        kind = tflite_quantizer.op_kinds((batch.exported[0].folder / "model_float.tflite").read_bytes())[table[0]["layer"]]
        assert bool(kept.int16_layers) == (kind in tflite_quantizer.FAST_16X8_OPS), (kind, kept)
    else:
        assert kept.int16_layers == ()
    plain = export_batch(req, [ExportOptions()]).exported[0]
    assert _float_ops(target, batch.exported[0].folder / kept.artifact) > _float_ops(
        target, plain.folder / plain.result.artifact)
    assert _accuracy(batch.exported[0].folder / kept.artifact, x, y) > 0.5


def test_openvino_entropy_collection_is_bounded() -> None:
    """OpenVINO's entropy calibration keeps a bounded subsample of each activation, like the other backends
    (it kept every value of every sample: 300 x 16,384 here), with each sample's exact extremes."""
    import openvino as ov
    import openvino.opset13 as ops

    from targets.openvino_activations import collected_values

    param = ops.parameter([1, 64, 64, 4], np.float32, name="x")
    relu = ops.relu(param)
    relu.set_friendly_name("act")
    model = ov.Model([ops.multiply(relu, np.float32(2.0))], [param])
    x = np.random.default_rng(0).normal(size=(300, 64, 64, 4)).astype(np.float32)
    calib = make_calibration_set(x, None, 300)
    values = collected_values(model, [("act", 0)], calib).values("act:0")
    assert values.size <= 300 * (1024 + 2) < x.size // 10
    assert values.max() == np.maximum(x, 0).max() and values.min() == 0.0


def test_openvino_entropy_keeps_both_bounds(tmp_path: Path) -> None:
    """`entropy` on OpenVINO sets an activation FakeQuantize to the entropy range of its tensor, both bounds (it
    kept only max(|lo|, |hi|) and scaled NNCF's limits by it), with the zero point on the grid: a skewed,
    heavy-tailed tensor gets a lower bound of its own, well inside [-hi, 0]."""
    import keras
    import openvino as ov

    from calibration.learned import on_grid
    from calibration.ranges import estimate_range
    from targets.openvino import OpenVINOTarget

    keras.utils.set_random_seed(0)
    inp = keras.Input((16,))
    hidden = keras.layers.Dense(16, name="skewed")(inp)
    model = keras.Model(inp, keras.layers.Dense(4)(hidden))
    k, b = model.get_layer("skewed").get_weights()
    model.get_layer("skewed").set_weights([k * 0.3, b + 2.0])  # mostly positive, a long tail both ways
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    x = np.random.default_rng(0).standard_t(2.0, size=(64, 16)).astype(np.float32)
    calib = make_calibration_set(x, None, 64)
    q, _ = OpenVINOTarget().quantized(FloatModel(tmp_path / "sm", None, (16,)), calib,
                                      ExportOptions(calibration_method="entropy"))
    fqs = [op for op in q.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
           and op.input_value(0).get_node().get_type_name() != "Constant"
           and op.input_value(0).get_node().get_type_name() != "Parameter"]
    assert len(fqs) == 1
    lo, hi = (float(np.min(fqs[0].input_value(i).get_node().get_data())) for i in (1, 2))
    values = keras.Model(inp, hidden).predict(x, verbose=0)
    elo, ehi = on_grid(*estimate_range(values, "entropy"))
    assert np.isclose(lo, elo, rtol=1e-4) and np.isclose(hi, ehi, rtol=1e-4), ((lo, hi), (elo, ehi))
    assert -hi * 0.9 < lo < 0.0 and values.min() < lo  # its own lower bound, clipping the negative tail
    assert ov.Core().compile_model(q, "CPU") is not None

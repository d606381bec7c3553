"""Read each artifact the build wrote and prove it is int8, independently of the code that wrote it."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np


def test_tflite_is_full_integer(built_run: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(built_run / "tflite" / "model_int8.tflite"))
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    dtypes = [t["dtype"] for t in interp.get_tensor_details()]
    floats = [t["name"] for t in interp.get_tensor_details() if t["dtype"] == np.float32]
    assert not floats, f"float tensors left: {floats}"
    assert sum(d == np.int8 for d in dtypes) > len(dtypes) // 2
    # every int8 tensor with weights carries quantization parameters
    for t in interp.get_tensor_details():
        if t["dtype"] == np.int8:
            assert t["quantization_parameters"]["scales"].size >= 1


def test_onnx_has_symmetric_qdq(built_run: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(built_run / "tensorrt" / "model_qdq.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8, f"{node.name}: zero point dtype {zp.dtype}"
            zero_points.append(zp)
    assert zero_points and all(np.all(z == 0) for z in zero_points), "TensorRT needs zero points of 0"
    # per-channel weights: some DequantizeLinear on an int8 initializer has a vector of scales
    per_channel = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].dtype == np.int8
        and inits[n.input[1]].size > 1
    ]
    assert per_channel
    assert (built_run / "tensorrt" / "build_engine.sh").read_text().count("--int8") == 1


def test_openvino_ir_has_fakequantize_and_int8_weights(built_run: Path) -> None:
    import openvino as ov

    model = ov.Core().read_model(str(built_run / "openvino" / "model_int8.xml"))
    types = [op.get_type_name() for op in model.get_ops()]
    assert types.count("FakeQuantize") >= 2
    int8_consts = [
        op
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
    ]
    assert len(int8_consts) >= 3  # the conv and dense weights
    rt_info = ElementTree.parse(built_run / "openvino" / "model_int8.xml").getroot().find("rt_info")
    assert rt_info is not None and rt_info.find("nncf/quantization") is None  # NNCF's repr of its defaults
    assert rt_info.find("nncf/version").get("value") == nncf_version()  # type: ignore[union-attr]


def nncf_version() -> str:
    import nncf

    return str(nncf.__version__)


def test_report_matches_contract(built_run: Path) -> None:
    r = json.loads((built_run / "report.json").read_text())
    assert r["schema"] == 1 and r["passed"] is True
    assert set(r["reference"]) >= {"path", "accuracy", "params", "macs", "size_bytes"}
    assert (built_run / r["reference"]["path"]).is_file()
    assert r["eval_set"] == {"path": "data/eval.npz", "samples": 360, "split": "test",
                             "reference_scores": "data/reference_scores.npz"}
    assert r["validation_set"]["path"] == "data/val.npz" and r["validation_set"]["source"] == "held out"
    with np.load(built_run / "data" / "eval.npz") as d:
        assert d["x"].dtype == np.float32 and d["y"].dtype == np.int64 and d["x"].shape == (360, 8, 8, 1)
        assert float(d["x"].max()) <= 1.0  # preprocessed with scale 16
    for name, path in (
        ("tflite", "tflite/model_int8.tflite"),
        ("openvino", "openvino/model_int8.xml"),
        ("tensorrt", "tensorrt/model_qdq.onnx"),
    ):
        t = r["targets"][name]
        assert t["artifact"] == path and (built_run / path).is_file()
        for key in (
            "precision",
            "runtime",
            "device",
            "size_bytes",
            "float_accuracy",
            "accuracy",
            "accuracy_drop",
            "float_layers",
            "latency_ms",
            "passed",
            "violations",
        ):
            assert key in t, f"{name}: {key} missing"
        assert t["precision"] == "int8" and t["device"] == "host"
        informational = {"informational"} if t.get("latency_informational") else set()  # not its kind of device
        assert set(t["latency_ms"]) - informational == {
            "median",
            "p90",
            "p99",
            "mean",
            "std",
            "min",
            "iqr",
            "median_ci",
            "iterations",
            "warmup",
            "threads",
        }
        lo, hi = t["latency_ms"]["median_ci"]
        assert lo <= t["latency_ms"]["median"] <= hi
        assert t["latency_ms"]["iterations"] == 20 and t["latency_ms"]["min"] <= t["latency_ms"]["median"]
        assert abs(t["accuracy_drop"] - (r["reference"]["accuracy"] - t["accuracy"])) < 1e-6
        assert t["accuracy_drop"] <= r["budget"]["max_accuracy_drop"] and t["passed"]  # sized in conftest
    assert "not TensorRT" in " ".join(r["targets"]["tensorrt"]["notes"])
    assert (built_run / "report.html").is_file() and (built_run / "build.log").is_file()


def test_accuracy_is_measured_in_the_runtime(built_run: Path) -> None:
    """Re-run the .tflite by hand on eval.npz: the report's accuracy is what LiteRT gives."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(built_run / "tflite" / "model_int8.tflite"))
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = i["quantization"]
    with np.load(built_run / "data" / "eval.npz") as d:
        x, y = d["x"], d["y"]
    hits = 0
    for k in range(len(y)):
        interp.set_tensor(i["index"], np.clip(np.round(x[k : k + 1] / scale + zp), -128, 127).astype(np.int8))
        interp.invoke()
        hits += int(interp.get_tensor(o["index"]).argmax() == y[k])
    r = json.loads((built_run / "report.json").read_text())
    assert r["targets"]["tflite"]["accuracy"] == hits / len(y)

"""`bench --profile`'s per-op profiles (targets/runner_profile.py, runner_litert_prof.py) on tiny models built
here, each runtime for real: LiteRT's C API profiler through ctypes, OpenVINO's counters under the build's compile
config, ONNX Runtime's profiler; and the host's reading of them (pipeline/benchrun/profile.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.benchrun.profile import summarize
from targets import runner_litert_prof, runner_profile
from targets.runner_sessions import stderr_filtered


@pytest.fixture(scope="module")
def int8_tflite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A full-integer int8 CNN (conv, pool, dense, softmax) on 8x8x1, from tf.lite's converter."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Conv2D(8, 3, activation="relu"),
                                 tf.keras.layers.MaxPooling2D(), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(4, activation="softmax")])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i : i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    path = tmp_path_factory.mktemp("litert") / "model_int8.tflite"
    path.write_bytes(conv.convert())
    return path, x[:1]


def test_litert_times_xnnpack_operators_with_the_precision_they_ran_in(int8_tflite: tuple[Path, np.ndarray]) -> None:
    path, x = int8_tflite
    prof = runner_profile.profile(path, 1, x, runs=30)
    assert prof["available"], prof["reason"]
    assert "LiteRT C API" in prof["tool"] and prof["granularity"] == "op" and prof["runs"] == 30
    assert prof["runtime_ms_source"] == "Invoke events" and prof["runtime_ms"] > 0 and prof["profiled_run_ms"] > 0
    convs = [o for o in prof["ops"] if o["type"] == "Convolution"]
    assert convs and all(o["precision"] == "int8" and o["kernel"].startswith("XNNPACK: ") for o in convs)
    assert all(o["ms"] >= 0 and o["type"] and o["precision"] for o in prof["ops"])
    assert prof["total_ms"] == pytest.approx(sum(o["ms"] for o in prof["ops"]))
    assert "whole microseconds" in prof["note"] and prof["runtime_unprofiled_ms"] is None
    cell = {"profile": prof, "latency_ms": {"median": prof["runtime_ms"]}}
    summarize(cell)
    assert cell["profile"]["coverage_runtime"] == pytest.approx(prof["total_ms"] / prof["runtime_ms"])
    assert isinstance(cell["profile"]["adds_up"], bool) and "the end-to-end latency" in prof["adds_up_against"]


def test_litert_without_the_c_functions_says_which_are_missing() -> None:
    assert not isinstance(runner_litert_prof.library(), str)
    reason = runner_litert_prof.library((*runner_litert_prof.SYMBOLS, "LiteRtNoSuchProfiler"))
    assert isinstance(reason, str) and reason.endswith("lacks the C functions LiteRtNoSuchProfiler")


@pytest.mark.parametrize(("name", "precision"), [
    ("Convolution (NHWC, QC8) IGEMM", "int8"), ("Fully Connected (NC, QS8, QC8W) GEMM", "int8"),
    ("Fully Connected (NC, QD8, F32, QC8W) GEMM", "int8"), ("Convert (NC, F32, QS8)", "float32->int8"),
    ("Softmax (NC, F32)", "float32"), ("Static Reshape (NC)", "-"), ("Max Pooling (NHWC, S8)", "int8"),
])  # fmt: skip
def test_xnnpack_operator_names_give_their_precision(name: str, precision: str) -> None:
    assert runner_profile.xnnpack_precision(name) == precision


def test_openvino_profiles_the_model_the_build_measures(make_onnx: Callable[[Path], np.ndarray],
                                                        tmp_path: Path) -> None:
    """Compiled as every other OpenVINO session (f32 hint): a float model's layers run in float32, not in the
    bfloat16 the CPU plugin picks by default where the CPU has AVX-512 BF16; the runtime's own latency is read
    with the counters on and off."""
    path = tmp_path / "model.onnx"
    make_onnx(path)
    prof = runner_profile.openvino_profile(path, 1, np.ones((1, 8), np.float32), 20)  # OpenVINO reads the .onnx
    assert "bfloat16" not in {o["precision"] for o in prof["ops"]} and "float32" in {o["precision"] for o in prof["ops"]}
    assert prof["runtime_ms_source"] == "InferRequest.latency" and prof["runtime_ms"] > 0
    assert prof["runtime_unprofiled_ms"] > 0


def test_onnxruntime_reads_its_model_runs(make_onnx: Callable[[Path], np.ndarray], tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    make_onnx(path)
    prof = runner_profile.onnxruntime_profile(path, 1, np.ones((1, 8), np.float32), 20)
    assert prof["runtime_ms_source"] == "model_run events" and prof["runtime_ms"] > 0
    assert prof["runtime_unprofiled_ms"] is None and {o["precision"] for o in prof["ops"]} == {"float32"}


def _cell(total: float, unprofiled: float | None, median: float) -> dict:
    prof = {"available": True, "ops": [{"name": "a", "type": "Conv", "precision": "int8", "ms": total}],
            "total_ms": total, "profiled_run_ms": 8.0, "runtime_ms": 2.0, "runtime_ms_source": "InferRequest.latency",
            "runtime_unprofiled_ms": unprofiled}
    return {"profile": prof, "latency_ms": {"median": median}}


@pytest.mark.parametrize(("total", "unprofiled", "adds_up"), [
    (0.9, 1.0, True), (1.15, 1.0, True), (0.5, 1.0, False), (0.0, 1.0, False), (1.3, 1.0, False),
    (3.6, None, True), (1.0, None, False), (5.0, None, False),
])  # fmt: skip
def test_the_check_is_against_the_unprofiled_latency_and_can_fail(total: float, unprofiled: float | None,
                                                                   adds_up: bool) -> None:
    """Against the runtime's own latency without the profiler where it has one (here 1 ms), else against the
    end-to-end latency (4 ms); never against the profiled inference (2 ms by the runtime, 8 ms around the call)."""
    cell = _cell(total, unprofiled, median=4.0)
    summarize(cell)
    prof = cell["profile"]
    assert prof["adds_up"] is adds_up and prof["coverage"] == pytest.approx(total / 4.0)
    assert prof["coverage_runtime"] == pytest.approx(total / 2.0)
    assert prof["coverage_checked"] == pytest.approx(total / (unprofiled or 4.0))
    assert ("InferRequest.latency" in prof["adds_up_against"]) is (unprofiled is not None)
    assert prof["reading"].startswith(f"the ops add up to {prof['coverage_checked']:.0%} of ")


def test_litert_c_api_start_up_lines_are_filtered_warnings_kept(capfd: pytest.CaptureFixture[str]) -> None:
    with stderr_filtered():
        os.write(2, b"INFO: [environment.cc:36] Creating LiteRT environment with options\n"
                    b"WARNING: [npu_registry.cc:34] NPU accelerator could not be loaded and registered.\n"
                    b"WARNING: [gpu_registry.cc:160] GPU accelerator could not be loaded and registered.\n"
                    b"WARNING: [compiled_model.cc:1] Failed to parse runtime options\n")
    assert capfd.readouterr().err == "WARNING: [compiled_model.cc:1] Failed to parse runtime options\n"

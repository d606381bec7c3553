"""Latency decides only where it was measured on the target's kind of device: tflite on an ARM CPU, openvino on
an x86 CPU, tensorrt with TensorRT. Elsewhere it is informational: never judged, never chosen by."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
from conftest import BUILT_RUN_BUDGET, write_config

from pipeline.cli import main
from pipeline.measure.device_kind import informational_reason
from targets import DeviceFamily, get_target


def _build(cfg: Path, out: Path) -> tuple[int, dict]:
    rc = main(["--quiet", "build", str(cfg), "--out", str(out)])
    return rc, json.loads((out / "report.json").read_text())


class _Device:
    def __init__(self, tensorrt: bool = False, emulated: object = None) -> None:
        self.tensorrt, self.emulated, self.url, self.expected_cpu = tensorrt, emulated, "ssh://pi@board", None


def test_each_target_serves_its_family_and_only_that_family_decides() -> None:
    assert get_target("tflite").device_family is DeviceFamily.ARM_CPU
    assert get_target("openvino").device_family is DeviceFamily.X86_CPU
    assert get_target("tensorrt").device_family is DeviceFamily.TENSORRT
    arm, x86 = {"arch": "aarch64"}, {"arch": "x86_64"}
    assert informational_reason("tflite", _Device(), arm) is None  # a Pi over SSH
    assert "not on an ARM CPU" in (informational_reason("tflite", None, x86) or "")  # this x86 host
    assert informational_reason("openvino", None, x86) is None
    assert informational_reason("openvino", _Device(), arm) is not None
    assert "not with TensorRT" in (informational_reason("tensorrt", None, x86) or "")
    assert informational_reason("tensorrt", _Device(tensorrt=True), arm) is None  # a Jetson
    assert "emulation" in (informational_reason("tflite", _Device(emulated=object()), arm) or "")
    # the user says this host is the deployment machine: its latency counts
    assert informational_reason("tflite", None, x86, deploy_on_host=True) is None


def test_tensorrt_on_the_host_is_not_judged_on_latency(trained_cnn: Path, digits_npz: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", trained_cnn, digits_npz, "[budget]\nmax_latency_ms = 0.0001\n",
                       targets=("tensorrt",))
    rc, report = _build(cfg, tmp_path / "run")
    t = report["targets"]["tensorrt"]
    assert rc == 0 and t["passed"] and not t["violations"], t["violations"]
    assert t["latency_ms"]["informational"] and "not with TensorRT" in t["latency_informational"]
    assert t["latency_ms"]["median"] > 0.0001  # measured, and far over the budget it is not judged against
    lo, hi = t["latency_ms"]["median_ci"]
    assert lo <= t["latency_ms"]["median"] <= hi
    sp = t["speedup"]  # int8 vs float, timed in interleaved rounds in this process
    assert sp["interleaved"] and sp["interval"][0] <= sp["ratio"] <= sp["interval"][1]
    assert sp["verdict"] in ("faster", "slower", "no measurable difference")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the x86 host case")
def test_deploy_on_host_judges_the_host_latency(trained_cnn: Path, digits_npz: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", trained_cnn, digits_npz, "[budget]\nmax_latency_ms = 0.0001\n",
                       targets=("tflite",))
    cfg.write_text(cfg.read_text() + "deploy_on_host = true\n")
    rc, report = _build(cfg, tmp_path / "run")
    t = report["targets"]["tflite"]
    assert rc == 1 and not t["passed"] and any("max_latency_ms" in v for v in t["violations"])
    assert "latency_informational" not in t and t["deploy_on_host"]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the x86 host case")
@pytest.mark.parametrize("target", ["tflite", "tensorrt"])
def test_auto_on_a_host_of_another_kind_ships_int8_by_metric_and_size(trained_cnn: Path, digits_npz: Path,
                                                                     tmp_path: Path, target: str) -> None:
    """Whatever this x86 host's timings (LiteRT int8 is slower than float on AVX2; s8 Q/DQ slower than fp32 on
    ONNX Runtime's CPU provider), auto never ships float or fp16 for speed: int8 meets the budget (sized in
    conftest: BUILT_RUN_BUDGET), so int8 ships, and the report says why."""
    cfg = write_config(tmp_path / "c.toml", trained_cnn, digits_npz,
                       f"[budget]\nmax_accuracy_drop = {BUILT_RUN_BUDGET}\n",
                       targets=(target,))
    cfg.write_text(cfg.read_text() + 'precision = "auto"\n')
    rc, report = _build(cfg, tmp_path / "run")
    t = report["targets"][target]
    assert rc == 0 and t["passed"], t.get("violations")
    assert t["precision"] == "int8", t["precision_choice"]
    assert "Latency did not decide" in t["precision_choice"] and "could decide on" in t["precision_choice"]
    assert t["selection"]["split"] == "validation" and t["selection"]["candidates"] >= 3

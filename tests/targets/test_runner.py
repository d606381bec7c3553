"""The device runner as the SSH transport runs it: a script, JSON on stdout, nothing but real errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from targets.runner import stderr_filtered

RUNNER = Path(__file__).resolve().parents[2] / "targets" / "runner.py"


def test_stderr_filter_drops_litert_delegate_line_only(capfd: pytest.CaptureFixture[str]) -> None:
    with stderr_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: Didn't find op FOO\n")
    out, err = capfd.readouterr()
    assert err == "ERROR: Didn't find op FOO\n"


def test_runner_script_prints_json_and_no_delegate_noise(built_run: Path) -> None:
    done = subprocess.run([sys.executable, str(RUNNER), str(built_run / "tflite" / "model_int8.tflite"),
                           "--eval", str(built_run / "data" / "eval.npz"), "--warmup", "1", "--iterations", "5"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    report = json.loads((built_run / "report.json").read_text())
    assert result["accuracy"] == report["targets"]["tflite"]["accuracy"]  # the build measured it in-process
    assert len(result["latency_samples_ms"]) == 5
    assert "XNNPACK" not in done.stderr


def test_score_is_top1_of_any_output_shape() -> None:
    from targets.runner import score

    outputs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    assert score(outputs, np.array([1, 1, 1])) == pytest.approx(2 / 3)
    assert score(outputs.reshape(3, 1, 2), np.array([1, 0, 1])) == 1.0
    assert score(np.zeros((0, 2)), np.zeros(0)) == 0.0

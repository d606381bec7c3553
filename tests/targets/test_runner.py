"""The device runner as the SSH transport runs it: a script, JSON on stdout, nothing but real errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runtimes import accuracy, eval_set

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
    x, y = eval_set(built_run / "data" / "eval.npz")  # LiteRT's own Interpreter, not targets.runner
    assert result["accuracy"] == accuracy(built_run / "tflite" / "model_int8.tflite", x, y)
    assert len(result["latency_samples_ms"]) == 5
    assert "XNNPACK" not in done.stderr


def test_score_is_top1_of_any_output_shape() -> None:
    from targets.runner import score

    outputs = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    assert score(outputs, np.array([1, 1, 1])) == pytest.approx(2 / 3)
    assert score(outputs.reshape(3, 1, 2), np.array([1, 0, 1])) == 1.0
    assert score(np.zeros((0, 2)), np.zeros(0)) == 0.0


@pytest.mark.parametrize("artifact", ["tflite/model_int8.tflite", "openvino/model_int8.xml", "tensorrt/model_qdq.onnx"])
def test_batched_evaluation_equals_one_sample_at_a_time(built_run: Path, artifact: str) -> None:
    """Each artifact of the build takes a batch (LiteRT resized, OpenVINO reshaped, ONNX's dynamic batch axis);
    evaluating in batches (7: the last batch is shorter and padded) gives each sample's per-sample outputs and
    the same metric value, which is the one the build reported and the one the runtime gives when run by hand
    (its own Python API, one sample at a time, tests/runtimes.py)."""
    from targets import runner

    with np.load(built_run / "data" / "eval.npz") as data:
        x, y = data["x"].astype(np.float32), data["y"]
    session = runner.open_session(built_run / artifact, 1).exact()
    assert session.batch_runner(7) is not None, f"{artifact} should take a batch dimension > 1"
    one = runner.outputs_of(session, x, batch=1)
    for batch in (7, runner.EVAL_BATCH):
        batched = runner.outputs_of(session, x, batch=batch)
        np.testing.assert_allclose(batched, one, rtol=1e-5, atol=1e-6)
        assert runner.score(batched, y) == runner.score(one, y)
    target = artifact.split("/")[0]
    by_hand = accuracy(built_run / artifact, x, y)
    assert runner.score(one, y) == by_hand
    assert json.loads((built_run / "report.json").read_text())["targets"][target]["accuracy"] == by_hand
    assert runner.outputs_of(session, x[:1]).shape == one[:1].shape  # a single sample: no batch runner needed


def test_a_batch_that_disagrees_with_batch_one_is_not_trusted(built_run: Path) -> None:
    """The real ONNX Runtime session of the build's Q/DQ artifact, with its batch runner's outputs shifted the
    way a runtime's faulty batch kernel would be: the spot check sees it and every sample runs one at a time."""
    from targets import runner

    with np.load(built_run / "data" / "eval.npz") as data:
        x = data["x"].astype(np.float32)
    session = runner.open_session(built_run / "tensorrt" / "model_qdq.onnx", 1).exact()
    real = session.batch_runner

    def shifted(n: int):  # noqa: ANN202
        run = real(n)
        return None if run is None else (lambda batch: run(batch) + 1.0)

    one = runner.outputs_of(session, x, batch=1)
    session.batch_runner = shifted  # type: ignore[method-assign]
    np.testing.assert_array_equal(runner.outputs_of(session, x, batch=32), one)

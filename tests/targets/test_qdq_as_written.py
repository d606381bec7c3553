"""The tensorrt artifact is judged by its Q/DQ graph as written (ONNX Runtime with graph optimizations off),
whatever the host's ISA: ORT's fused s8 kernels saturate on CPUs without VNNI, TensorRT does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from targets import runner

AS_WRITTEN = "ORT_DISABLE_ALL"


def _independent_accuracy(onnx_path: Path, eval_path: Path) -> float:
    """ONNX Runtime by hand, graph optimizations disabled: DequantizeLinear -> float op -> QuantizeLinear."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    with np.load(eval_path) as d:
        x, y = d["x"], d["y"]
    hits = sum(int(np.argmax(sess.run(None, {name: x[i : i + 1]})[0]) == y[i]) for i in range(len(y)))
    return hits / len(y)


@pytest.fixture
def evaluated_sessions(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every session whose outputs are scored (runner.outputs_of, what every accuracy path runs), in order."""
    seen: list[Any] = []
    real = runner.outputs_of

    def spy(session: runner.Session, x: np.ndarray) -> np.ndarray:
        seen.append(session)
        return real(session, x)

    monkeypatch.setattr(runner, "outputs_of", spy)
    return seen


def _level(session: Any) -> str:
    return str(session.sess.get_session_options().graph_optimization_level).split(".")[-1]


def test_report_accuracy_is_the_graph_as_written(built_run: Path) -> None:
    r = json.loads((built_run / "report.json").read_text())
    t = r["targets"]["tensorrt"]
    assert AS_WRITTEN in t["evaluation"] and "as written" in t["evaluation"]
    assert t["accuracy"] == _independent_accuracy(built_run / t["artifact"], built_run / "data" / "eval.npz")
    assert t["float_layers"] == [] and t["accuracy_drop"] <= r["budget"]["max_accuracy_drop"]  # sized in conftest
    assert r["host"]["cpu"]["arch"] and isinstance(r["host"]["cpu"]["features"], list)
    assert t["cpu"] == r["host"]["cpu"]


def test_every_accuracy_path_runs_the_graph_as_written(built_run: Path, evaluated_sessions: list[Any]) -> None:
    """Verification, the device runner, `edgepipe verify`'s measurement and the per-layer sensitivity all
    measure through runner.evaluate; read the ONNX Runtime session options each one really used."""
    from pipeline.measure.verify import Bench, run_on_host
    from pipeline.ui import UI
    from targets.tensorrt import qdq_accuracy

    onnx_path, eval_path = built_run / "tensorrt" / "model_qdq.onnx", built_run / "data" / "eval.npz"
    host = run_on_host(onnx_path, eval_path, Bench(1, 2, 1), UI(quiet=True), "tensorrt")
    device = runner.run(onnx_path, eval_path, runner.Bench(1, 2, 1))
    with np.load(eval_path) as d:
        sensitivity = qdq_accuracy(onnx_path, d["x"][:50], d["y"][:50])
    assert len(evaluated_sessions) == 3
    assert all(_level(s) == AS_WRITTEN for s in evaluated_sessions)
    assert host["accuracy"] == device["accuracy"] == _independent_accuracy(onnx_path, eval_path)
    assert 0 <= sensitivity <= 1 and AS_WRITTEN in device["evaluation"]


def test_latency_session_keeps_the_default_optimizations(built_run: Path) -> None:
    """Host latency stays informational and is measured as before (ORT's default graph optimizations)."""
    session = runner.open_session(built_run / "tensorrt" / "model_qdq.onnx")
    assert _level(session) == "ORT_ENABLE_ALL"
    assert _level(session.exact()) == AS_WRITTEN


@pytest.fixture(scope="session")
def qemu_x86_64() -> str:
    """Debian's qemu-user-static (installed by scripts/install-test-deps.sh when missing)."""
    import platform
    import shutil
    import subprocess

    if platform.machine() != "x86_64":
        pytest.skip("emulating an AVX2-only x86 CPU needs an x86_64 host")
    found = shutil.which("qemu-x86_64-static")
    if found is None:
        script = Path(__file__).resolve().parents[2] / "scripts" / "install-test-deps.sh"
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1200)
        found = shutil.which("qemu-x86_64-static")
        assert found, f"qemu-user-static missing and {script.name} failed: {proc.stderr[-500:]}"
    return found


def test_an_avx2_only_cpu_gives_the_same_accuracy(built_run: Path, qemu_x86_64: str) -> None:
    """The device runner under QEMU's Haswell model (AVX2, no VNNI, no AVX-512), on whatever x86 host runs the
    suite: the Q/DQ graph as written scores what the report says. (ORT's default fused kernels do not: 0.275
    vs 0.917 on this model under Haswell, measured when this test was written.)"""
    import subprocess
    import sys

    r = json.loads((built_run / "report.json").read_text())
    runner_py = Path(runner.__file__)
    cmd = [qemu_x86_64, "-cpu", "Haswell", sys.executable, str(runner_py), str(built_run / "tensorrt" / "model_qdq.onnx"),
           "--eval", str(built_run / "data" / "eval.npz"), "--warmup", "1", "--iterations", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    assert result["accuracy"] == r["targets"]["tensorrt"]["accuracy"]
    assert "ORT_DISABLE_ALL" in result["evaluation"]

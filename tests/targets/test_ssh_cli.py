"""`edgepipe bench` and `edgepipe verify` against a real sshd on 127.0.0.1, through the CLI, as a user would."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.cli import main


def test_bench_over_ssh(built_run: Path, ssh_config: str, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = built_run / "tflite" / "model_int8.tflite"
    rc = main(["--quiet", "bench", str(artifact), "--device", ssh_config, "--remote-python", sys.executable,
               "--iterations", "7", "--eval", str(built_run / "data" / "eval.npz"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads(out)
    assert result["device"] == ssh_config and result["latency_ms"]["iterations"] == 7
    report = json.loads((built_run / "report.json").read_text())
    assert result["accuracy"] == report["targets"]["tflite"]["accuracy"]  # same runtime, same data


def test_verify_over_ssh_rewrites_the_report(built_run: Path, ssh_config: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(built_run, run)
    rc = main(["--quiet", "verify", str(run), "--device", ssh_config, "--remote-python", sys.executable, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads((run / "report.json").read_text())
    assert json.loads(out) == report
    for name in ("tflite", "openvino", "tensorrt"):
        assert report["targets"][name]["device"] == ssh_config, name
        assert report["targets"][name]["device_name"] == ssh_config, name  # the name the user gave
        assert report["targets"][name]["accuracy_drop"] <= report["budget"]["max_accuracy_drop"]  # conftest
    assert ssh_config in (run / "report.html").read_text()


def test_unreachable_device_is_one_line(built_run: Path, closed_port: int,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--quiet", "bench", str(built_run / "tflite" / "model_int8.tflite"), "--device",
               f"ssh://root@127.0.0.1:{closed_port}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "connection refused" in err


def test_a_device_that_is_not_the_profiles_cpu_is_named(built_run: Path, ssh_config: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """rpi5's profile declares an aarch64 Cortex-A76; the x86 machine behind the loopback sshd answers: the report
    and the terminal say the numbers are that CPU's, not the Pi's. The remote Q/DQ run is the graph as written."""
    from targets.runner import cpu_info

    run = tmp_path / "run"
    shutil.copytree(built_run, run)
    monkeypatch.setenv("EDGEPIPE_DEVICE_RPI5", ssh_config)
    rc = main(["verify", str(run), "--device", "rpi5", "--remote-python", sys.executable])
    err = capsys.readouterr().err
    assert rc == 0, err
    report = json.loads((run / "report.json").read_text())
    t = report["targets"]["tflite"]
    assert t["cpu"] == cpu_info()  # what the far end reported about itself
    note = next(n for n in t["notes"] if n.startswith("accuracy and latency were measured on "))
    assert "not on rpi5's Cortex-A76 (aarch64: dotprod, neon)" in note
    assert "not on rpi5's Cortex-A76" in " ".join(err.split())
    assert "ORT_DISABLE_ALL" in report["targets"]["tensorrt"]["evaluation"]

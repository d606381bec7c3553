"""The device path on real aarch64 runtimes: `edgepipe verify`, `bench` and `build --device NAME` on emulated
devices (Debian arm64 + QEMU >= 10 + sshd on loopback), through the CLI as a user would run them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from targets import runner


def _host_accuracy(artifact: Path, eval_npz: Path) -> float:
    """An independent x86 run of the same artifact in the host's LiteRT."""
    return float(runner.run(artifact, eval_npz, runner.Bench(0, 1, 1))["accuracy"])


def _assert_emulated(t: dict, release: str, runtime: str) -> None:
    assert t["cpu"]["arch"] == "aarch64" and "neon" in t["cpu"]["features"]
    emu = t["emulated"]
    assert emu["emulated"] is True and emu["arch"] == "aarch64" and emu["cpu_model"] == "cortex-a76"
    assert emu["release"] == f"Debian {release} arm64" and emu["runtime"] == runtime == t["runtime"]
    assert emu["qemu"].startswith("qemu-aarch64 ") and int(emu["qemu"].split()[1].split(".")[0]) >= 10


def test_verify_on_emulated_bookworm(built_run: Path, arm_devices: dict, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """aarch64 LiteRT's accuracy counts; its latency is marked emulated and never judged (a 1 ns budget passes)."""
    run = tmp_path / "run"
    shutil.copytree(built_run, run)
    report = json.loads((run / "report.json").read_text())
    report["budget"]["max_latency_ms"] = 1e-6
    (run / "report.json").write_text(json.dumps(report))
    rc = main(["--quiet", "verify", str(run), "--device", "arm-bookworm", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    t = json.loads(out)["targets"]["tflite"]
    _assert_emulated(t, "bookworm", t["runtime"])
    assert t["device_name"] == "arm-bookworm" and t["device"].startswith("ssh://")  # the name, and how reached
    assert "arm-bookworm" in (run / "report.html").read_text()
    assert t["runtime"].startswith("ai-edge-litert ")
    host = _host_accuracy(run / t["artifact"], run / "data" / "eval.npz")
    assert abs(t["accuracy"] - host) <= 0.005, (t["accuracy"], host)
    assert t["latency_ms"]["emulated"] is True and t["violations"] == [] and t["passed"]
    assert any(n.startswith("latency measured under emulation") for n in t["notes"])
    assert t["host_agreement"]["top1"] >= 0.99 and t["host_agreement"]["samples"] == len(np.load(run / "data" / "eval.npz")["y"])
    assert json.loads(out)["targets"]["openvino"] == report["targets"]["openvino"]  # not an ARM runtime's


def test_bench_on_emulated_bullseye_tflite_runtime(built_run: Path, arm_devices: dict,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The legacy runtime on Python 3.9: runner.py is Python 3.8+, numpy and tflite_runtime only."""
    artifact, eval_npz = built_run / "tflite" / "model_int8.tflite", built_run / "data" / "eval.npz"
    rc = main(["--quiet", "bench", str(artifact), "--device", "arm-bullseye", "--eval", str(eval_npz), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads(out)
    assert result["runtime"] == "tflite-runtime 2.13.0" and result["cpu"]["arch"] == "aarch64"
    assert result["emulated"]["release"] == "Debian bullseye arm64"
    assert abs(result["accuracy"] - _host_accuracy(artifact, eval_npz)) <= 0.005


def test_lstm_example_builds_for_an_emulated_device(arm_devices: dict, digits_npz: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The recurrent example's model, built with `build --device`: measured on aarch64, agreeing with the host."""
    from pipeline.inputs.examples import get_example

    with np.load(digits_npz) as d:
        data = {k: d[k].reshape(len(d[k]), 8, 8) if k.startswith("x") else d[k] for k in d.files}
    np.savez(tmp_path / "rows.npz", **data)
    model = get_example("digits-lstm").build_teacher()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data["x_train"] / 16.0, data["y_train"], epochs=8, batch_size=64, verbose=0)
    model.save(tmp_path / "lstm.keras")
    cfg = tmp_path / "lstm.toml"
    cfg.write_text(f'[model]\npath = "{tmp_path / "lstm.keras"}"\n[data]\npath = "{tmp_path / "rows.npz"}"\n'
                   "scale = 16.0\n[quantize]\ncalibration_samples = 100\n[targets.tflite]\n")
    rc = main(["--quiet", "build", str(cfg), "--device", "arm-bookworm", "--out", str(tmp_path / "run"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    t = json.loads(out)["targets"]["tflite"]
    assert "error" not in t, t.get("error")
    _assert_emulated(t, "bookworm", t["runtime"])
    assert t["host_agreement"]["top1"] >= 0.99
    host = _host_accuracy(tmp_path / "run" / t["artifact"], tmp_path / "run" / "data" / "eval.npz")
    assert abs(t["accuracy"] - host) <= 0.005


def test_devices_are_listed_and_kept_until_their_spec_changes(arm_devices: dict,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["device", "list"]) == 0
    listed = capsys.readouterr().out
    assert "arm-bookworm\temulated aarch64 cortex-a76" in listed and "tflite-runtime 2.13.0" in listed
    assert main(["device", "emulate", "arm-bookworm", "--release", "bookworm"]) == 0
    assert "(up to date)" in " ".join(capsys.readouterr().err.split())

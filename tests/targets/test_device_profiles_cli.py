"""Device profiles through the CLI, over the real sshd on 127.0.0.1: a profile's threads, warmup and
iterations reach the measurement (explicit flags and config keys win), and an .onnx benched on a TensorRT
profile is sent to the device runner as a TensorRT job."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import EXIT_BUDGET, main
from targets.profiles import load_profile


@pytest.fixture
def profile_host(sshd, remote_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The throw-away sshd as the host of the shipped profiles (EDGEPIPE_DEVICE_<NAME>, as a user sets it)."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host 127.0.0.1\n  IdentityFile {sshd.key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                   f"  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile /dev/null\n")
    monkeypatch.setenv("EDGEPIPE_SSH_CONFIG", str(cfg))
    url = f"ssh://root@127.0.0.1:{sshd.port}"
    for name in ("RPI5", "JETSON_ORIN_NANO"):
        monkeypatch.setenv(f"EDGEPIPE_DEVICE_{name}", url)
    return url


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras
    from keras import layers

    path = tmp_path_factory.mktemp("profile-model") / "tiny.keras"
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, layers.Dense(10, activation="softmax")(x)).save(path)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["--quiet", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_build_and_bench_measure_with_the_device_profile(tiny_model: Path, digits_npz: Path, profile_host: str,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rpi5 = load_profile("rpi5")
    assert (rpi5.threads, rpi5.warmup, rpi5.iterations) == (4, 20, 200)  # what build-rpi5.sh promises
    cfg = tmp_path / "tiny.toml"  # [targets.tflite] sets iterations only: the profile gives threads and warmup
    cfg.write_text(f'[model]\npath = "{tiny_model}"\n[data]\npath = "{digits_npz}"\nscale = 16.0\n'
                   "[quantize]\ncalibration_samples = 20\n[targets.tflite]\niterations = 5\n")
    rc, out, err = _run(["build", str(cfg), "--target", "tflite", "--device", "rpi5", "--out", str(tmp_path / "run"),
                         "--remote-python", sys.executable, "--json"], capsys)
    assert rc == 0, err
    entry = json.loads(out)["targets"]["tflite"]
    assert entry["device"] == profile_host
    lat = entry["latency_ms"]
    assert (lat["threads"], lat["warmup"], lat["iterations"]) == (4, 20, 5)

    artifact = str(tmp_path / "run" / "tflite" / "model_int8.tflite")
    common = ["bench", artifact, "--device", "rpi5", "--remote-python", sys.executable, "--json"]
    rc, out, err = _run(common, capsys)
    assert rc == 0, err
    lat = json.loads(out)["latency_ms"]
    assert (lat["threads"], lat["warmup"], lat["iterations"]) == (4, 20, 200)
    rc, out, err = _run([*common, "--threads", "2", "--iterations", "7"], capsys)  # flags win over the profile
    assert rc == 0, err
    lat = json.loads(out)["latency_ms"]
    assert (lat["threads"], lat["warmup"], lat["iterations"]) == (2, 20, 7)


def test_bench_of_an_onnx_on_a_tensorrt_profile_runs_tensorrt(make_onnx: Callable[[Path], np.ndarray],
                                                               profile_host: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The file name is not the target's name: bench decides from the artifact's kind and the device.
    No trtexec here, so the device runner's TensorRT path ends in its own 'trtexec not found' error."""
    model = tmp_path / "classifier.onnx"
    make_onnx(model)
    rc, out, err = _run(["bench", str(model), "--device", "jetson-orin-nano", "--remote-python", sys.executable,
                         "--iterations", "3"], capsys)
    assert rc == EXIT_BUDGET and "trtexec not found" in err, (rc, err)
    assert err.count("\n") == 1 and "Traceback" not in err

    rc, out, err = _run(["bench", str(model), "--device", profile_host, "--remote-python", sys.executable,
                         "--iterations", "3", "--json"], capsys)  # a plain SSH device: ONNX Runtime
    assert rc == 0, err
    assert json.loads(out)["runtime"].startswith("onnxruntime")

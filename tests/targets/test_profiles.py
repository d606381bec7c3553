"""Device profiles (targets/devices/*.toml) and the scripts/build-<device>.sh wrappers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, UsageError
from targets.profiles import DEVICES_DIR, list_profiles, load_profile
from targets.ssh import SshDevice

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "host": "all",
    "intel-nuc": "openvino",
    "jetson-orin-nano": "tensorrt",
    "rpi4": "tflite",
    "rpi5": "tflite",
}
GOOD = 'description = "test board"\ntarget = "tflite"\n'


def test_bundled_profiles() -> None:
    profiles = {p.name: p for p in list_profiles()}
    assert {name: p.target for name, p in profiles.items()} == EXPECTED
    assert profiles["rpi4"].threads == profiles["rpi5"].threads == 4
    assert profiles["host"].local and profiles["host"].targets == ("tflite", "openvino", "tensorrt")
    assert profiles["host"].resolve_host({}) is None and profiles["host"].ssh_device({}) is None
    jetson = " ".join(profiles["jetson-orin-nano"].notes)
    assert all(word in jetson for word in ("model_qdq.onnx", "build_engine.sh", "trtexec"))
    for p in profiles.values():
        assert p.description and p.iterations >= 1 and p.warmup >= 0 and p.threads >= 1
        assert p.local or p.host == ""  # remote hosts come from the user, never from the repo


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown device 'rpi3': known devices are host, intel-nuc, jetson"):
        load_profile("rpi3")
    with pytest.raises(UsageError, match="unknown device"):
        load_profile("../devices/rpi4")


def test_host_from_environment_or_error() -> None:
    rpi5 = load_profile("rpi5")
    assert rpi5.env_var == "EDGEPIPE_DEVICE_RPI5"
    with pytest.raises(UsageError, match="EDGEPIPE_DEVICE_RPI5=ssh://"):
        rpi5.resolve_host({})
    device = rpi5.ssh_device({"EDGEPIPE_DEVICE_RPI5": "ssh://pi@10.0.0.5:2222"})
    assert device == SshDevice("pi", "10.0.0.5", 2222, python="python3", expected_cpu=rpi5.expected_cpu)
    jetson = load_profile("jetson-orin-nano")
    assert jetson.env_var == "EDGEPIPE_DEVICE_JETSON_ORIN_NANO"
    assert jetson.ssh_device({jetson.env_var: "orin"}) == SshDevice(
        None, "orin", None, python="/usr/bin/python3", expected_cpu=jetson.expected_cpu
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (GOOD + "hots = 'x'\n", r"hots: unknown key"),
        (GOOD + "threads = 0\n", r"threads: Input should be greater than or equal to 1"),
        ('description = "x"\ntarget = "cuda"\n', r"target: Input should be"),
        (GOOD + 'host = "ssh://pi:pw@x"\n', r"host: bad device .*passwords"),
        (GOOD + 'host = "x"\nlocal = true\n', r"a local profile has no 'host'"),
        ('target = "tflite"\n', r"description: Field required"),
        ("target = \n", r"not valid TOML"),
    ],
)
def test_invalid_profile_files(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "board.toml").write_text(text)
    with pytest.raises(ConfigError, match=error) as err:
        load_profile("board", tmp_path)
    assert str(err.value).startswith(str(tmp_path / "board.toml"))


def test_profile_with_host(tmp_path: Path) -> None:
    (tmp_path / "board.toml").write_text(
        GOOD + 'host = "ssh://pi@board.local"\npython = "~/venv/bin/python"\n'
    )
    board = load_profile("board", tmp_path)
    assert board.resolve_host({}) == "ssh://pi@board.local"
    assert board.resolve_host({"EDGEPIPE_DEVICE_BOARD": "other"}) == "other"
    assert board.ssh_device({}) == SshDevice("pi", "board.local", None, python="~/venv/bin/python")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_build_script_per_profile(name: str) -> None:
    script = ROOT / "scripts" / f"build-{name}.sh"
    assert script.is_file() and os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert '_setup.sh"' in text and f"--device {name}" in text and "exec edgepipe build" in text
    target = EXPECTED[name]
    assert (f"--target {target}" in text) == (target != "all")
    assert (DEVICES_DIR / f"{name}.toml").is_file()

"""Emulated aarch64 devices built the way a user builds them (`edgepipe device emulate`), once per session,
in the session's own cache. The tools come from the project's own script (scripts/install-test-deps.sh):
these tests install QEMU >= 10 and mmdebstrap when they are missing, never skip."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[3]
# name -> `edgepipe device emulate` arguments: both generations of Raspberry Pi OS
DEVICES = {
    "arm-bookworm": ["--release", "bookworm"],  # ai-edge-litert (the default), Python 3.11
    "arm-bullseye": ["--release", "bullseye", "--runtime", "tflite-runtime==2.13.0"],  # Python 3.9
}


def _tools_ready() -> bool:
    from targets.emulate.qemu import find_qemu

    if not shutil.which("mmdebstrap"):
        return False
    try:
        find_qemu(Path("/nonexistent"), fetch=False)
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def arm_devices(sshd: object) -> Iterator[dict[str, str]]:
    """Both devices, built through the CLI; removed afterwards. `sshd` makes sure OpenSSH is installed."""
    if not _tools_ready():
        subprocess.run(["bash", str(ROOT / "scripts" / "install-test-deps.sh")], check=True, capture_output=True)
    for name, args in DEVICES.items():
        assert main(["--quiet", "device", "emulate", name, *args]) == 0, name
    yield {name: name for name in DEVICES}
    for name in DEVICES:
        main(["--quiet", "device", "remove", name])

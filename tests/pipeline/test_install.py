"""The environment the suite runs in is requirements.lock, exactly (scripts/_setup.sh installs it)."""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;]+)")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return pins


def test_every_pin_is_installed() -> None:
    pins = _pins()
    assert {"tensorflow-cpu", "keras", "ai-edge-litert", "openvino", "nncf", "onnxruntime", "optuna"} <= set(pins)
    wrong = {}
    for dist, pinned in pins.items():
        try:
            got = version(dist)
        except PackageNotFoundError:
            got = "missing"
        if got != pinned:
            wrong[dist] = (pinned, got)
    assert not wrong, f"installed versions differ from requirements.lock (pinned, installed): {wrong}"


def test_report_versions_are_the_lock(built_run: Path) -> None:
    pins = _pins()
    versions = json.loads((built_run / "report.json").read_text())["versions"]
    assert versions and all(pins[dist] == v for dist, v in versions.items()), (versions, pins)


def test_lock_covers_every_declared_dependency() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]).lower() for d in declared}
    names.discard("edgepipe")
    assert names <= set(_pins()), names - set(_pins())


def test_keras2_pin_follows_tensorflow() -> None:
    """scripts/_setup.sh pins tf_keras (kept off the path, for the Keras 2 SavedModel tests) at TensorFlow's
    version; what it installed is that pin."""
    setup = (ROOT / "scripts" / "_setup.sh").read_text()
    pin = re.search(r'TF_KERAS="tf_keras==([^"]+)"', setup)
    assert pin is not None and pin.group(1).split(".")[:2] == _pins()["tensorflow-cpu"].split(".")[:2]
    installed = list((ROOT / ".venv" / "keras2").glob("tf_keras-*.dist-info"))
    assert [p.name for p in installed] == [f"tf_keras-{pin.group(1)}.dist-info"]
